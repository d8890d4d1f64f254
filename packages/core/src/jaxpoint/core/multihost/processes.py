"""Process roles: who this process is, how many there are, and groups of processes.

Roles follow `jax.distributed`: once it is initialized, the coordination service's process
id and count; without it, one process (index 0 of 1). Reading them never starts an XLA
backend, so tools that only list checkpoints stay cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.multihost.runtime import distributed_runtime

# Longer member lists are named by a digest so keys stay short on large jobs.
_MAX_READABLE_LABEL = 64


def process_index() -> int:
    """This process's index in the job: `jax.distributed`'s process id, or 0 without it."""
    runtime = distributed_runtime()
    return 0 if runtime is None else runtime.process_id


def process_count() -> int:
    """How many processes the job has: `jax.distributed`'s count, or 1 without it."""
    runtime = distributed_runtime()
    return 1 if runtime is None else runtime.num_processes


def is_primary_host(primary_host: int | None) -> bool:
    """Whether this process does the primary's work (commit, metadata, deletion).

    `primary_host=None` means every process acts as its own primary, so it is True
    everywhere; that is how processes writing to their own local storage are set up.
    """
    if primary_host is None:
        return True
    count = process_count()
    if isinstance(primary_host, bool) or not isinstance(primary_host, int):
        raise InvalidArgumentError(
            f"Expected primary_host to be a process index (int) or None, got "
            f"{primary_host!r} of type {type(primary_host).__name__} on process "
            f"{process_index()}. To fix, pass an int in [0, {count}) or None."
        )
    if not 0 <= primary_host < count:
        raise InvalidArgumentError(
            f"Expected primary_host in [0, {count}) for a job of {count} process(es), got "
            f"{primary_host} on process {process_index()}. To fix, pass an existing process "
            "index, or None to make every process its own primary."
        )
    return process_index() == primary_host


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcessGroup:
    """The processes taking part in one collective call, as seen by one of them."""

    members: tuple[int, ...]
    is_everyone: bool
    label: str

    @property
    def process_ids(self) -> list[int] | None:
        """Members as the coordination service wants them: None means every process."""
        return None if self.is_everyone else list(self.members)


def resolve_group(processes: Collection[int] | None, *, what: str) -> ProcessGroup:
    """Validates `processes` for the collective described by `what` and names the group.

    The label is identical on every member whether it passed None or the full list, so
    both spellings reach the same barrier.
    """
    index, count = process_index(), process_count()
    if processes is None:
        return ProcessGroup(members=tuple(range(count)), is_everyone=True, label="all")
    if isinstance(processes, (str, bytes)) or not isinstance(processes, Collection):
        raise InvalidArgumentError(
            f"Expected processes to be a collection of process indices or None for {what}, "
            f"got {processes!r} on process {index}. To fix, pass e.g. [0, 1] or None."
        )
    listed = list(processes)
    invalid = [
        p for p in listed if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < count
    ]
    if invalid or not listed:
        raise InvalidArgumentError(
            f"Expected processes to be a non-empty collection of indices in [0, {count}) for "
            f"{what}, got {listed!r} (invalid: {invalid!r}) on process {index}. To fix, list "
            f"only processes of this {count}-process job."
        )
    members = tuple(sorted(set(listed)))
    if index not in members:
        raise InvalidArgumentError(
            f"Expected only members of processes={list(members)} to call {what}, but process "
            f"{index} called it. To fix, call it only on the listed processes, or add "
            f"process {index} to the list on every member."
        )
    if len(members) == count:
        return ProcessGroup(members=members, is_everyone=True, label="all")
    return ProcessGroup(members=members, is_everyone=False, label=_label(members))


def _label(members: tuple[int, ...]) -> str:
    readable = "p" + "-".join(map(str, members))
    if len(readable) <= _MAX_READABLE_LABEL:
        return readable
    digest = hashlib.sha256(readable.encode()).hexdigest()[:16]
    return f"n{len(members)}-{digest}"
