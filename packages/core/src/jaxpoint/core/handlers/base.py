"""The handler protocol: how one item of a checkpoint is saved, finalized and restored.

Call sequence of a save (the checkpointers drive it):
  1. `stage(directory, args, context)` on every process, in the caller's thread. It
     captures what must be written (host copies where later mutation or donation could
     change it) and returns the write step. `save()` of an async checkpointer returns here.
  2. the returned `write()` on every process, possibly in a background thread: bytes
     go to storage under `directory` (each process into its own files).
  3. a barrier, then `finalize(directory, context)` on the primary process only: merge
     per-process files, write shared metadata.
Restore: `restore(directory, args)` on every process; `metadata(directory)` reads files only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

from jaxpoint.core.storage import Location

WriteStep = Callable[[], None]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SaveContext:
    """What a handler needs to know about the save it takes part in."""

    process_index: int = 0
    is_primary: bool = True
    # True when writing happens after `save()` returns: staging must copy mutable buffers.
    is_async: bool = False


class CheckpointArgs:
    """Base of every args class; `register_with_handler` ties one to its handler."""


@runtime_checkable
class CheckpointHandler(Protocol):
    """Saves and restores one item. See the module docstring for the call order."""

    # The name orbax records in `_CHECKPOINT_METADATA` for this kind of item.
    typestr: ClassVar[str]

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep: ...

    def finalize(self, directory: Location, *, context: SaveContext) -> None: ...

    def restore(self, directory: Location, args: Any | None = None) -> Any: ...

    def metadata(self, directory: Location) -> Any: ...
