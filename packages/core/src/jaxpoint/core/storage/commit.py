"""How a save becomes visible: rename on POSIX, a marker file on object stores.

Protocol, for one checkpoint folder `final`:
  1. `work = protocol.begin(final)` (primary process): where every process writes.
  2. All processes write below `work`; a barrier; then the primary calls
     `protocol.commit(work, final)`. Until then `is_committed(final)` is False, so a
     save killed at any moment is never listed or restored.
"""

from __future__ import annotations

from typing import Protocol

from jaxpoint.core.storage.location import Location

COMMIT_MARKER = "commit_success.txt"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
REPLACED_SUFFIX = f"{TMP_SUFFIX}-replaced"


def is_tmp_name(name: str) -> bool:
    """True for the folder names of saves in flight (jaxpoint's and orbax's)."""
    return TMP_SUFFIX in name


def write_marker(folder: Location) -> None:
    (folder / COMMIT_MARKER).write_text(f"Checkpoint commit was successful to {folder}")


class CommitProtocol(Protocol):
    def begin(self, final: Location) -> Location: ...

    def commit(self, work: Location, final: Location) -> None: ...

    def is_committed(self, final: Location) -> bool: ...


class RenameCommit:
    """Write into `<name>.orbax-checkpoint-tmp`, then rename it into place."""

    def begin(self, final: Location) -> Location:
        work = final.parent / f"{final.name}{TMP_SUFFIX}"
        # A killed save of the same name must never block this one.
        work.remove()
        work.make_folder()
        return work

    def commit(self, work: Location, final: Location) -> None:
        write_marker(work)
        if not final.exists():
            work.rename_to(final)
            return
        # force=True over a committed checkpoint. Swap the two folders in one step, so a
        # crash at any moment leaves the old or the new checkpoint at `final`, and the other
        # under the tmp name, which the next save of `final` removes.
        if work.exchange_with(final):
            work.remove()
            return
        # The file system cannot swap (e.g. NFS): move the old one aside first. A crash
        # between the two renames leaves `final` missing, the old checkpoint under
        # REPLACED_SUFFIX and the new one under TMP_SUFFIX.
        replaced = final.parent / f"{final.name}{REPLACED_SUFFIX}"
        replaced.remove()
        final.rename_to(replaced)
        work.rename_to(final)
        replaced.remove()

    def is_committed(self, final: Location) -> bool:
        return not is_tmp_name(final.name) and final.exists() and not final.is_file()


class MarkerCommit:
    """Write in place; the marker file, written last, is the commit."""

    def begin(self, final: Location) -> Location:
        final.remove()
        return final

    def commit(self, work: Location, final: Location) -> None:
        write_marker(final)

    def is_committed(self, final: Location) -> bool:
        return (final / COMMIT_MARKER).exists()


def commit_protocol_for(location: Location) -> CommitProtocol:
    """Picks the protocol from what the storage can do atomically."""
    return RenameCommit() if location.has_atomic_rename else MarkerCommit()
