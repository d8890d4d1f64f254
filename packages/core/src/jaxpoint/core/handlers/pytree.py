"""PyTreeCheckpointHandler: a tree of arrays, scalars and strings as one item.

Layout under the item folder (orbax's): `_METADATA`, `_sharding`, `_strings.json`,
`array_metadatas/process_<i>`, `ocdbt.process_<i>/` per process and the merged
`manifest.ocdbt`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from jaxpoint.core.errors import CorruptCheckpointError, InvalidArgumentError
from jaxpoint.core.handlers.base import CheckpointArgs, SaveContext, WriteStep
from jaxpoint.core.handlers.pytree_metadata import (
    JAX_ARRAY,
    TreeRecord,
    read_tree_record,
    write_tree_record,
)
from jaxpoint.core.handlers.pytree_restore import SavedExtras, restore_tree
from jaxpoint.core.handlers.pytree_save import StagedTree, stage_tree
from jaxpoint.core.handlers.registry import register_with_handler
from jaxpoint.core.handlers.sharding_metadata import read_shardings, write_shardings
from jaxpoint.core.handlers.single_replica import (
    SingleReplicaArrayHandler,
    has_single_replica_args,
)
from jaxpoint.core.handlers.tree_metadata_view import ArrayMetadata, ScalarMetadata, describe_tree
from jaxpoint.core.storage import (
    ArrayFormat,
    Location,
    merge_process_databases,
    read_json,
    write_arrays,
)
from jaxpoint.core.validation import require_positive_int

STRINGS_FILE = "_strings.json"
ARRAY_METADATAS = "array_metadatas"


class PyTreeCheckpointHandler:
    """Saves and restores a pytree item; see `PyTreeSave` and `PyTreeRestore`.

    Leaves restored with `SingleReplicaArrayRestoreArgs` go through
    `single_replica_handler` (default `SingleReplicaArrayHandler()`): one replica reads,
    the others receive the arrays by collective.
    """

    typestr: ClassVar[str] = "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler"

    def __init__(self, *, use_ocdbt: bool = True, use_zarr3: bool = True,
                 compression: str | None = None, zstd_level: int = 1,
                 single_replica_handler: SingleReplicaArrayHandler | None = None) -> None:
        self._format = ArrayFormat(use_ocdbt=use_ocdbt, use_zarr3=use_zarr3,
                                   compression=compression, zstd_level=zstd_level)
        self._single_replica = single_replica_handler

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        fmt = self._format_for(args)
        staged = stage_tree(args.item, args.save_args, is_primary=context.is_primary,
                            copy=context.is_async,
                            pinned=getattr(args, "enable_pinned_host_transfer", None))
        record = TreeRecord(leaves=staged.records, use_ocdbt=fmt.use_ocdbt,
                            use_zarr3=fmt.use_zarr3,
                            custom_metadata=getattr(args, "custom_metadata", None))

        def write() -> None:
            self._write(directory, staged, record, fmt, context)

        return write

    def _format_for(self, args: Any) -> ArrayFormat:
        size = getattr(args, "ocdbt_target_data_file_size", None)
        if size is None:
            return self._format
        if not self._format.use_ocdbt:
            raise InvalidArgumentError(
                f"Expected use_ocdbt=True with ocdbt_target_data_file_size={size}, got a "
                "handler with use_ocdbt=False, which writes no OCDBT data files. To fix, "
                "drop ocdbt_target_data_file_size or use PyTreeCheckpointHandler(use_ocdbt=True)."
            )
        return dataclasses.replace(self._format, target_data_file_size=size)

    @staticmethod
    def _write(item: Location, staged: StagedTree, record: TreeRecord, fmt: ArrayFormat,
               context: SaveContext) -> None:
        item.make_folder()
        write_arrays(item, staged.writes, fmt=fmt, process_index=context.process_index)
        (item / ARRAY_METADATAS).make_folder()
        (item / ARRAY_METADATAS / f"process_{context.process_index}").write_json(
            {"array_metadatas": staged.array_metadatas})
        if context.is_primary:
            write_tree_record(item, record)
            write_shardings(item, staged.shardings)
            if staged.strings:
                (item / STRINGS_FILE).write_json(staged.strings)

    def finalize(self, directory: Location, *, context: SaveContext) -> None:
        if self._format.use_ocdbt:
            merge_process_databases(directory)

    def restore(self, directory: Location, args: Any | None = None) -> Any:
        record = read_tree_record(directory)
        extras = _read_extras(directory, record)
        target = getattr(args, "item", None)
        restore_args = getattr(args, "restore_args", None)
        if has_single_replica_args(restore_args):
            single_replica = self._single_replica or SingleReplicaArrayHandler()
            return single_replica.restore_tree(
                directory, record, extras, target=target, restore_args=restore_args,
                strict=getattr(args, "strict", True),
                partial=getattr(args, "partial_restore", False))
        return restore_tree(directory, record, extras, target=target, restore_args=restore_args,
                            strict=getattr(args, "strict", True),
                            partial=getattr(args, "partial_restore", False))

    def metadata(self, directory: Location) -> Any:
        record = read_tree_record(directory)
        return describe_tree(directory, record, read_shardings(directory))


def _read_extras(item: Location, record: TreeRecord) -> SavedExtras:
    strings: dict[str, str] = {}
    if any(leaf.value_type == "string" for leaf in record.leaves):
        strings = read_json(item / STRINGS_FILE)
    key_impls: dict[str, str] = {}
    for name in (item / ARRAY_METADATAS).list_names():
        entries = read_json(item / ARRAY_METADATAS / name).get("array_metadatas", [])
        if not isinstance(entries, list):
            raise CorruptCheckpointError(
                f"Expected a list under 'array_metadatas' in {item / ARRAY_METADATAS / name}, "
                f"got {type(entries).__name__}. The file is corrupt."
            )
        for entry in entries:
            meta = entry.get("array_metadata") if isinstance(entry, dict) else None
            if not isinstance(meta, dict):
                raise CorruptCheckpointError(
                    f"Expected objects with an 'array_metadata' object in "
                    f"{item / ARRAY_METADATAS / name}, got {entry!r:.200}. The file is corrupt."
                )
            ext = meta.get("ext_metadata") or {}
            if isinstance(ext, dict) and isinstance(ext.get("random_key_impl"), str):
                key_impls[str(meta.get("param_name"))] = ext["random_key_impl"]
    shardings = read_shardings(item) if any(leaf.value_type == JAX_ARRAY for leaf in record.leaves) else {}
    return SavedExtras(strings=strings, shardings=shardings, key_impls=key_impls)


@register_with_handler(PyTreeCheckpointHandler, for_save=True)
@dataclasses.dataclass
class PyTreeSave(CheckpointArgs):
    """Save `item` (a pytree); `save_args` is a matching tree of SaveArgs."""

    item: Any
    save_args: Any = None
    ocdbt_target_data_file_size: int | None = None
    enable_pinned_host_transfer: bool | None = None
    custom_metadata: Any = None

    def __post_init__(self) -> None:
        require_positive_int(self.ocdbt_target_data_file_size, allow_none=True,
                             what="PyTreeSave.ocdbt_target_data_file_size (bytes)",
                             fix="pass e.g. 64 * 1024**2, or None for the default")


@register_with_handler(PyTreeCheckpointHandler, for_restore=True)
@dataclasses.dataclass
class PyTreeRestore(CheckpointArgs):
    """Restore as the structure of `item` (or `restore_args`); `partial_restore` allows a subset."""

    item: Any = None
    restore_args: Any = None
    transforms: Any = None
    transforms_default_to_original: bool = True
    legacy_transform_fn: Any = None
    partial_restore: bool = False


__all__ = ["ArrayMetadata", "PyTreeCheckpointHandler", "PyTreeRestore", "PyTreeSave", "ScalarMetadata"]
