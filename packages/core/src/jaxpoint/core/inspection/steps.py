"""`list_steps(directory)`: what a checkpoint directory holds, cheaply and without failing.

Each entry of the directory is one of:
  - a committed step: a folder named like a step (by the name format given, or detected
    from the names), committed by the storage's commit protocol and, on local disk,
    holding `commit_success.txt` or `_CHECKPOINT_METADATA`;
  - an unfinished save or deletion: a tmp folder (`<step>.orbax-checkpoint-tmp[-...]`),
    or on object stores a step folder without its commit marker;
  - a damaged entry: named like a step, but not a committed step folder (empty or
    partial, a file, a symlink loop, unreadable). Listed so an operator can look; never a
    step, never deleted by jaxpoint;
  - anything else (`_READ_LEASES`, user files): ignored.
Cost: one listing plus one or two lookups per step-named entry; no barrier, no metadata
read. Reading `_CHECKPOINT_METADATA` (the manager does, for times and metrics) can find
more damaged steps; see `CheckpointManager.damaged_steps`.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re

from jaxpoint.core.checkpointers.step_metadata import STEP_METADATA_FILE
from jaxpoint.core.errors import CheckpointError
from jaxpoint.core.inspection.step_names import StepNameFormat, standard_name_format
from jaxpoint.core.storage import (
    COMMIT_MARKER,
    CommitProtocol,
    Location,
    commit_protocol_for,
    parse_tmp_name,
)

_STEP_LIKE = re.compile(r"(?:(?P<prefix>.+)_)?(?P<digits>\d+)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DamagedStep:
    """An entry named like step `step` that is not a readable, committed step."""

    step: int
    name: str
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepListing:
    """The result of `list_steps`: committed steps, unfinished saves, damaged entries."""

    directory: str
    name_format: StepNameFormat
    committed: dict[int, str]  # step -> folder name, in increasing step order
    unfinished: list[str]  # folder names of saves and deletions that never finished
    damaged: list[DamagedStep]

    @property
    def steps(self) -> list[int]:
        return list(self.committed)


def detect_name_format(names: list[str]) -> StepNameFormat:
    """The standard format (prefix, zero padding) that most of `names` follow.

    Unpadded `<step>` when no name looks like a step.
    """
    by_prefix: dict[str | None, list[str]] = collections.defaultdict(list)
    for name in names:
        if parse_tmp_name(name) is None and (match := _STEP_LIKE.fullmatch(name)):
            by_prefix[match["prefix"]].append(match["digits"])
    if not by_prefix:
        return standard_name_format()
    prefix, digits = max(by_prefix.items(), key=lambda item: len(item[1]))
    padded = [d for d in digits if len(d) > 1 and d.startswith("0")]
    length = min(len(d) for d in padded) if padded else None
    return standard_name_format(step_prefix=prefix, step_format_fixed_length=length)


def list_steps(directory: str | os.PathLike[str] | Location, *,
               name_format: StepNameFormat | None = None) -> StepListing:
    """Lists `directory` (see the module docstring); detects the name format if not given.

    >>> import tempfile, os
    >>> root = tempfile.mkdtemp()
    >>> os.mkdir(os.path.join(root, "ckpt_0042")); os.mkdir(os.path.join(root, "ckpt_0007"))
    >>> listing = list_steps(root)
    >>> listing.name_format.step_prefix, listing.damaged[0].step, listing.steps
    ('ckpt', 7, [])
    """
    root = Location.parse(directory)
    names = root.list_names()
    if name_format is None:
        name_format = detect_name_format(names)
    protocol = commit_protocol_for(root)
    committed: dict[int, str] = {}
    unfinished: list[str] = []
    damaged: list[DamagedStep] = []
    for name in names:
        tmp = parse_tmp_name(name)
        if tmp is not None:
            if name_format.parse_name(tmp.base) is not None and _is_folder(root / name):
                unfinished.append(name)
            continue
        step = name_format.parse_name(name)
        if step is None or step in committed:
            continue
        try:
            state = _step_state(root / name, protocol)
        except (CheckpointError, OSError) as error:
            state = f"it cannot be read: {str(error).rstrip('.')}"
        if state == "committed":
            committed[step] = name
        elif state == "unfinished":
            unfinished.append(name)
        elif state != "gone":
            damaged.append(DamagedStep(step=step, name=name, reason=state))
    return StepListing(directory=str(root), name_format=name_format,
                       committed=dict(sorted(committed.items())), unfinished=unfinished,
                       damaged=damaged)


def _is_folder(location: Location) -> bool:
    try:
        return location.exists() and not location.is_file()
    except (CheckpointError, OSError):
        return False


def _step_state(folder: Location, protocol: CommitProtocol) -> str:
    """'committed', 'unfinished', 'gone' or why the entry is damaged."""
    if not folder.has_atomic_rename:
        # Object stores write in place: a step folder without its marker is a save in
        # flight (or killed), as Orbax sees it too. One request for a committed step.
        if protocol.is_committed(folder):
            return "committed"
        if folder.is_file():
            return "it is a file, not a checkpoint folder"
        return "unfinished" if folder.exists() else "gone"
    if not folder.exists():
        return "gone"  # deleted since the listing
    if folder.is_file():
        return "it is a file, not a checkpoint folder"
    # On disk a save only ever renames a finished folder to a step name, so a step
    # folder without either file was made by something else, or is half copied.
    if (folder / COMMIT_MARKER).exists() or (folder / STEP_METADATA_FILE).exists():
        return "committed"
    return f"it is empty or partial: it holds neither {COMMIT_MARKER} nor {STEP_METADATA_FILE}"
