"""StandardCheckpointHandler: the common case, a tree of arrays restored onto a target."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.handlers.base import CheckpointArgs, SaveContext, WriteStep
from jaxpoint.core.handlers.pytree import PyTreeCheckpointHandler, PyTreeRestore, PyTreeSave
from jaxpoint.core.handlers.registry import register_with_handler
from jaxpoint.core.storage import Location


class StandardCheckpointHandler:
    """A pytree item; `StandardRestore(target, strict=...)` restores onto `target`'s shardings."""

    typestr: ClassVar[str] = "orbax.checkpoint._src.handlers.standard_checkpoint_handler.StandardCheckpointHandler"

    def __init__(self, *, compression: str | None = None, use_zarr3: bool = True,
                 use_ocdbt: bool = True, use_compression: bool | None = None,
                 save_concurrent_gb: float | None = None,
                 restore_concurrent_gb: float | None = None,
                 multiprocessing_options: Any = None,
                 pytree_metadata_options: Any = None) -> None:
        # Orbax's keywords are checked (honoured or refused) by the pytree handler.
        self._pytree = PyTreeCheckpointHandler(
            compression=compression, use_zarr3=use_zarr3, use_ocdbt=use_ocdbt,
            use_compression=use_compression, save_concurrent_gb=save_concurrent_gb,
            restore_concurrent_gb=restore_concurrent_gb,
            multiprocessing_options=multiprocessing_options,
            pytree_metadata_options=pytree_metadata_options)

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        return self._pytree.stage(directory, PyTreeSave(
            args.item, save_args=args.save_args, custom_metadata=args.custom_metadata),
            context=context)

    def finalize(self, directory: Location, *, context: SaveContext) -> None:
        self._pytree.finalize(directory, context=context)

    def restore(self, directory: Location, args: Any | None = None) -> Any:
        if isinstance(args, PyTreeRestore):  # same layout: honour its restore_args too
            return self._pytree.restore(directory, args)
        item = getattr(args, "item", None)
        strict = getattr(args, "strict", True)
        return self._pytree.restore(directory, _StrictPyTreeRestore(item=item, strict=strict))

    def metadata(self, directory: Location) -> Any:
        return self._pytree.metadata(directory)


@dataclasses.dataclass
class _StrictPyTreeRestore(PyTreeRestore):
    strict: bool = True


@register_with_handler(StandardCheckpointHandler, for_save=True)
@dataclasses.dataclass
class StandardSave(CheckpointArgs):
    """Save `item`, a pytree of arrays and scalars."""

    item: Any
    save_args: Any = None
    custom_metadata: Any = None


@register_with_handler(StandardCheckpointHandler, for_restore=True)
@dataclasses.dataclass
class StandardRestore(CheckpointArgs):
    """Restore onto `item` (arrays or jax.ShapeDtypeStruct with shardings), or as saved if None.

    `strict=False` pads/truncates arrays whose stored shape differs and casts dtypes.
    """

    item: Any = None
    strict: bool = True
    support_layout: bool = False

    def __post_init__(self) -> None:
        if self.support_layout:
            raise InvalidArgumentError(
                "Expected StandardRestore(support_layout=False), got True. Restoring onto a "
                "target's device memory layout is not supported here: arrays are restored "
                "with the target's sharding and the default layout. To fix, drop "
                "support_layout=True and relayout after restore if you need one."
            )
