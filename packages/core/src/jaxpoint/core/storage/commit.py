"""How a save becomes visible and how a deletion makes it invisible again.

Protocol, for one checkpoint folder `final`:
  1. `work = protocol.begin(final)` (primary process): where every process writes. On
     storage with rename, `work` is `<name>.orbax-checkpoint-tmp-<token>`, unique to this
     attempt, so two writers of one step never share a folder.
  2. All processes write below `work`; a barrier; then the primary calls
     `protocol.commit(work, final, replace=...)`. Until then `is_committed(final)` is
     False, so a save killed at any moment is never listed or restored. Without
     `replace`, the commit never replaces a committed checkpoint: when another writer got
     there first it raises `CheckpointExistsError` and the winner's folder is intact.
  3. `protocol.uncommit(final)` takes a checkpoint out of sight and deletes it; a
     checkpoint that is already gone is not an error (two deleters may race).

Tmp names are owned here: `parse_tmp_name` recognises exactly the names jaxpoint and
Orbax create and nothing that merely contains the suffix.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import re
import secrets
import socket
import time
from typing import Protocol

from jaxpoint.core.errors import CheckpointExistsError, StorageError
from jaxpoint.core.storage.location import Location
from jaxpoint.core.storage.posix_backend import process_exists

COMMIT_MARKER = "commit_success.txt"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
# The kinds of tmp folder: a save in flight, a step being deleted, a checkpoint that
# force=True moved aside on storage that cannot swap two folders.
SAVING, DELETING, REPLACED = "saving", "deleting", "replaced"
# `<base>.orbax-checkpoint-tmp`, optionally `-<token>` (Orbax: a timestamp; jaxpoint:
# `<time_ns>-<pid>-<host hash>-<random>`, hashes of 8 hex digits), optionally `-deleting`
# or `-replaced`.
_TMP_PATTERN = re.compile(
    rf"(?P<base>.+?){re.escape(TMP_SUFFIX)}"
    r"(?:-\d+(?:-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})-[0-9a-f]{8})?)?"
    rf"(?:-(?P<kind>{DELETING}|{REPLACED}))?")
_HOST_HASH = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TmpName:
    """A parsed tmp folder name: the checkpoint it belongs to and what left it."""

    base: str
    kind: str  # SAVING, DELETING or REPLACED
    pid: int | None = None  # of the jaxpoint process that made it; None for Orbax's names
    host_hash: str | None = None

    @property
    def is_from_other_host(self) -> bool:
        """True when jaxpoint made it on another host (a folder the hosts share, or a disk
        that moved to a new machine)."""
        return self.host_hash is not None and self.host_hash != _HOST_HASH

    @property
    def is_abandoned(self) -> bool:
        """True when jaxpoint made it in a process of this host that no longer exists."""
        return (self.pid is not None and self.host_hash == _HOST_HASH
                and not process_exists(self.pid))


def parse_tmp_name(name: str) -> TmpName | None:
    """The parts of a tmp name jaxpoint or Orbax creates; None for any other name."""
    match = _TMP_PATTERN.fullmatch(name)
    if match is None or TMP_SUFFIX in match["base"]:
        return None
    pid = int(match["pid"]) if match["pid"] else None
    return TmpName(base=match["base"], kind=match["kind"] or SAVING, pid=pid,
                   host_hash=match["host"])


def is_tmp_name(name: str) -> bool:
    """True for exactly the folder names of saves and deletions in flight (jaxpoint's and
    Orbax's): `5.orbax-checkpoint-tmp.mybackup` is not one."""
    return parse_tmp_name(name) is not None


def new_tmp_name(base: str, kind: str = SAVING) -> str:
    """A tmp name for `base` that no other attempt, process or host will pick."""
    token = f"{time.time_ns()}-{os.getpid()}-{_HOST_HASH}-{secrets.token_hex(4)}"
    tail = "" if kind == SAVING else f"-{kind}"
    return f"{base}{TMP_SUFFIX}-{token}{tail}"


def write_marker(folder: Location) -> None:
    (folder / COMMIT_MARKER).write_text(f"Checkpoint commit was successful to {folder}")


def _exists_error(final: Location, found: str) -> CheckpointExistsError:
    return CheckpointExistsError(
        f"Expected no checkpoint at {final} when committing, found {found}: another writer "
        "committed it first (its checkpoint is kept; this save was discarded). To fix, make "
        "sure one process writes each directory, or save a new path."
    )


class CommitProtocol(Protocol):
    """Call order: `begin` then `commit` (primary, once per save); `uncommit` to delete."""

    def begin(self, final: Location) -> Location: ...

    def commit(self, work: Location, final: Location, *, replace: bool = False) -> None: ...

    def is_committed(self, final: Location) -> bool: ...

    def uncommit(self, final: Location, *, park_in: Location | None = None) -> None: ...


class RenameCommit:
    """Write into a unique `<name>.orbax-checkpoint-tmp-<token>`, then rename it into place.

    The rename never replaces an existing folder (see `PosixBackend.rename`), so of two
    writers committing one step exactly one wins.
    """

    def begin(self, final: Location) -> Location:
        _remove_abandoned(final)
        work = final.parent / new_tmp_name(final.name)
        work.make_folder()
        return work

    def commit(self, work: Location, final: Location, *, replace: bool = False) -> None:
        write_marker(work)
        if replace and self.is_committed(final):
            self._replace(work, final)
            return
        try:
            work.rename_to(final)
        except StorageError as error:
            if getattr(error, "errno", None) not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            work.remove()
            raise _exists_error(final, "a folder") from error

    def _replace(self, work: Location, final: Location) -> None:
        # force=True over a committed checkpoint. Swap the two folders in one step, so a
        # crash at any moment leaves the old or the new checkpoint at `final`, and the other
        # under the tmp name, which cleanup removes.
        if work.exchange_with(final):
            work.remove()
            return
        # The file system cannot swap (e.g. NFS): move the old one aside first. A crash
        # between the two renames leaves `final` missing, the old checkpoint under a
        # `-replaced` name and the new one under the work name.
        replaced = final.parent / new_tmp_name(final.name, REPLACED)
        final.rename_to(replaced)
        work.rename_to(final)
        replaced.remove()

    def is_committed(self, final: Location) -> bool:
        return not is_tmp_name(final.name) and final.exists() and not final.is_file()

    def uncommit(self, final: Location, *, park_in: Location | None = None) -> None:
        """Renames `final` out of sight, then removes it (or moves it into `park_in`).

        Never leaves a half-deleted folder under the step's name; a crash leaves a
        `-deleting` tmp folder that cleanup removes.
        """
        if park_in is not None:
            park_in.make_folder()
            (park_in / final.name).remove()
            target = park_in / final.name
        else:
            target = final.parent / new_tmp_name(final.name, DELETING)
        try:
            final.rename_to(target)
        except StorageError as error:
            if getattr(error, "errno", None) == errno.ENOENT:
                return  # another deleter got there first
            raise
        if park_in is None:
            target.remove()


class MarkerCommit:
    """Write in place; the marker file, written last and only if absent, is the commit.

    Object stores have no rename, so two writers of one step write into the same folder:
    the conditional marker write lets exactly one of them commit, but the loser's files
    may already be mixed into the folder. The manager's writer lease is what keeps a
    second writer away there (see docs/reliability.md).
    """

    def begin(self, final: Location) -> Location:
        final.remove()
        return final

    def commit(self, work: Location, final: Location, *, replace: bool = False) -> None:
        marker = final / COMMIT_MARKER
        text = f"Checkpoint commit was successful to {final}".encode()
        if replace:
            marker.write_bytes(text)
        elif not marker.write_bytes_if_absent(text):
            raise _exists_error(final, f"its {COMMIT_MARKER}")

    def is_committed(self, final: Location) -> bool:
        return (final / COMMIT_MARKER).exists()

    def uncommit(self, final: Location, *, park_in: Location | None = None) -> None:
        if park_in is not None:
            raise StorageError(
                f"Expected storage that can rename folders to move {final} into {park_in}, "
                "but object stores have none. To fix, drop todelete_subdir."
            )
        (final / COMMIT_MARKER).remove()  # first: a half-deleted step is never listed
        final.remove()


def _remove_abandoned(final: Location) -> None:
    """Removes tmp folders of `final` that no live writer can still commit: jaxpoint's from
    dead processes of this host, and the suffix-only name (`<name>.orbax-checkpoint-tmp`)
    that only Orbax and older jaxpoint versions use. Others wait for cleanup."""
    for name in final.parent.list_names():
        tmp = parse_tmp_name(name)
        if tmp is not None and tmp.base == final.name and (
                tmp.is_abandoned or name == f"{final.name}{TMP_SUFFIX}"):
            (final.parent / name).remove()


def commit_protocol_for(location: Location) -> CommitProtocol:
    """Picks the protocol from what the storage can do atomically."""
    return RenameCommit() if location.has_atomic_rename else MarkerCommit()
