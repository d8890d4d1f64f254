"""ArrayCheckpointHandler: a single array, stored as parameter `checkpoint` (orbax's layout)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from jaxpoint.core.handlers.base import CheckpointArgs, SaveContext, WriteStep
from jaxpoint.core.handlers.pytree import PyTreeCheckpointHandler, PyTreeRestore, PyTreeSave
from jaxpoint.core.handlers.registry import register_with_handler
from jaxpoint.core.storage import Location


class ArrayCheckpointHandler:
    """One jax.Array, np.ndarray or scalar; written without OCDBT as orbax does."""

    typestr: ClassVar[str] = "orbax.checkpoint._src.handlers.array_checkpoint_handler.ArrayCheckpointHandler"

    def __init__(self, checkpoint_name: str | None = None) -> None:
        self._name = checkpoint_name or "checkpoint"
        self._pytree = PyTreeCheckpointHandler(use_ocdbt=False, use_zarr3=False)

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        save_args = {self._name: args.save_args} if args.save_args is not None else None
        return self._pytree.stage(directory, PyTreeSave({self._name: args.item}, save_args=save_args),
                                  context=context)

    def finalize(self, directory: Location, *, context: SaveContext) -> None:
        return None

    def restore(self, directory: Location, args: Any | None = None) -> Any:
        item = getattr(args, "item", None)
        restore_args = getattr(args, "restore_args", None)
        restored = self._pytree.restore(directory, PyTreeRestore(
            item={self._name: item} if item is not None else None,
            restore_args={self._name: restore_args} if restore_args is not None else None))
        return restored[self._name]

    def metadata(self, directory: Location) -> Any:
        return self._pytree.metadata(directory)[self._name]


@register_with_handler(ArrayCheckpointHandler, for_save=True)
@dataclasses.dataclass
class ArraySave(CheckpointArgs):
    item: Any
    save_args: Any = None


@register_with_handler(ArrayCheckpointHandler, for_restore=True)
@dataclasses.dataclass
class ArrayRestore(CheckpointArgs):
    item: Any = None
    restore_args: Any = None
