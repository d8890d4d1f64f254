"""`save(path, tree)` and `restore(path, target)`: the whole API for the simplest use."""

from __future__ import annotations

from typing import Any

from jaxpoint.core.checkpointers.checkpointer import Checkpointer, PathLike
from jaxpoint.core.handlers import StandardCheckpointHandler, StandardRestore, StandardSave


def save(path: PathLike, tree: Any, *, force: bool = False) -> None:
    """Saves `tree` at `path` and returns once it is committed."""
    Checkpointer(StandardCheckpointHandler()).save(path, args=StandardSave(tree), force=force)


def restore(path: PathLike, target: Any = None, *, strict: bool = True) -> Any:
    """Restores the tree at `path`, onto `target`'s structure and shardings when given."""
    return Checkpointer(StandardCheckpointHandler()).restore(
        path, args=StandardRestore(target, strict=strict))
