"""The libraries under test and the one place where their configurations differ.

Every trial imports the library by module name as `ocp` and runs the same code. The only
difference is `orbax-uncompressed`: orbax's `StandardCheckpointHandler` has no switch for
its zstd compression, so that flavor uses the public `PyTreeCheckpointHandler(
use_compression=False)` with `PyTreeSave`/`PyTreeRestore` (what `StandardSave` and
`StandardRestore` delegate to).
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class Flavor:
    name: str
    library: str
    module: str
    description: str
    is_uncompressed_variant: bool = False


FLAVORS: dict[str, Flavor] = {
    flavor.name: flavor
    for flavor in (
        Flavor(name="jaxpoint", library="jaxpoint", module="jaxpoint.core",
               description="jaxpoint defaults (uncompressed)"),
        Flavor(name="orbax", library="orbax", module="orbax.checkpoint",
               description="orbax-checkpoint defaults (zstd)"),
        Flavor(name="orbax-uncompressed", library="orbax", module="orbax.checkpoint",
               description="orbax-checkpoint, PyTreeCheckpointHandler(use_compression=False)",
               is_uncompressed_variant=True),
    )
}


def import_library(flavor: Flavor) -> ModuleType:
    return importlib.import_module(flavor.module)


def manager(ocp: ModuleType, flavor: Flavor, directory: Any, *, is_async: bool,
            max_to_keep: int | None = None) -> Any:
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=is_async, max_to_keep=max_to_keep)
    if flavor.is_uncompressed_variant:
        return ocp.CheckpointManager(
            directory, options=options,
            item_handlers=ocp.PyTreeCheckpointHandler(use_compression=False))
    return ocp.CheckpointManager(directory, options=options)


def save_args(ocp: ModuleType, flavor: Flavor, tree: Any) -> Any:
    if flavor.is_uncompressed_variant:
        return ocp.args.PyTreeSave(tree)
    return ocp.args.StandardSave(tree)


def restore_args(ocp: ModuleType, flavor: Flavor, abstract_tree: Any) -> Any:
    if flavor.is_uncompressed_variant:
        return ocp.args.PyTreeRestore(
            item=abstract_tree,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_tree))
    return ocp.args.StandardRestore(abstract_tree)
