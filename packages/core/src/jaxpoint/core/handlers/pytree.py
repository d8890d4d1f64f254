"""PyTreeCheckpointHandler: a tree of arrays, scalars and strings as one item.

Layout under the item folder (orbax's): `_METADATA`, `_sharding`, `_strings.json`,
`array_metadatas/process_<i>`, `ocdbt.process_<i>/` per process and the merged
`manifest.ocdbt`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
from jaxpoint.core.errors import CorruptCheckpointError, InvalidArgumentError
from jaxpoint.core.handlers.base import CheckpointArgs, SaveContext, WriteStep
from jaxpoint.core.handlers.custom_leaves import finalize_custom, serialize_custom
from jaxpoint.core.handlers.orbax_keywords import (
    compression_for,
    concurrency_limits,
    refuse_unsupported,
)
from jaxpoint.core.handlers.pytree_metadata import (
    JAX_ARRAY,
    TreeRecord,
    read_tree_record,
    write_tree_record,
)
from jaxpoint.core.handlers.pytree_restore import execute_plan
from jaxpoint.core.handlers.pytree_save import StagedTree, stage_tree
from jaxpoint.core.handlers.registry import register_with_handler
from jaxpoint.core.handlers.restore_plan import SavedExtras, build_restore_plan
from jaxpoint.core.handlers.sharding_metadata import read_shardings, write_shardings
from jaxpoint.core.handlers.single_replica import (
    SingleReplicaArrayHandler,
    has_single_replica_args,
)
from jaxpoint.core.handlers.transformed_restore import (
    check_transform_options,
    restore_with_transforms,
)
from jaxpoint.core.handlers.tree_metadata_view import ArrayMetadata, ScalarMetadata, describe_tree
from jaxpoint.core.handlers.type_registry import GLOBAL_TYPE_HANDLER_REGISTRY
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
    # True in subclasses whose every process writes all of its shards, replicas included,
    # into a folder of its own (the emergency local tier).
    writes_every_replica: ClassVar[bool] = False

    def __init__(self, aggregate_filename: str | None = None, *, use_ocdbt: bool = True,
                 use_zarr3: bool = True, use_compression: bool | None = None,
                 compression: str | None = None, zstd_level: int = 1,
                 save_concurrent_gb: float | None = None,
                 restore_concurrent_gb: float | None = None,
                 single_replica_handler: SingleReplicaArrayHandler | None = None,
                 save_device_host_concurrent_gb: Any = None, memory_limit_options: Any = None,
                 multiprocessing_options: Any = None, type_handler_registry: Any = None,
                 handler_impl: Any = None, pytree_metadata_options: Any = None,
                 array_metadata_validator: Any = None,
                 enable_pinned_host_transfer: bool | None = None,
                 is_prioritized_key_fn: Any = None) -> None:
        name = type(self).__name__
        refuse_unsupported(
            name, aggregate_filename=aggregate_filename,
            save_device_host_concurrent_gb=save_device_host_concurrent_gb,
            memory_limit_options=memory_limit_options,
            multiprocessing_options=multiprocessing_options,
            type_handler_registry=type_handler_registry, handler_impl=handler_impl,
            pytree_metadata_options=pytree_metadata_options,
            array_metadata_validator=array_metadata_validator,
            enable_pinned_host_transfer=enable_pinned_host_transfer,
            is_prioritized_key_fn=is_prioritized_key_fn)
        compression = compression_for(use_compression=use_compression, compression=compression,
                                      handler=name)
        self._format = ArrayFormat(use_ocdbt=use_ocdbt, use_zarr3=use_zarr3,
                                   compression=compression, zstd_level=zstd_level)
        self._limits = concurrency_limits(save_concurrent_gb=save_concurrent_gb,
                                          restore_concurrent_gb=restore_concurrent_gb)
        self._single_replica = single_replica_handler
        self._custom_handlers: list[Any] = []

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        fmt = self._format_for(args)
        staged = stage_tree(args.item, args.save_args, is_primary=context.is_primary,
                            copy=context.is_async,
                            pinned=getattr(args, "enable_pinned_host_transfer", None),
                            every_replica=self.writes_every_replica)
        record = TreeRecord(leaves=staged.records, use_ocdbt=fmt.use_ocdbt,
                            use_zarr3=fmt.use_zarr3,
                            custom_metadata=getattr(args, "custom_metadata", None))
        # Custom TypeHandlers of this save, finalized after every process wrote.
        self._custom_handlers = list({id(leaf.handler): leaf.handler for leaf in staged.custom}.values())

        limit = self._limits.save_bytes

        def write() -> None:
            self._write(directory, staged, record, fmt, context, limit)

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
               context: SaveContext, max_in_flight_bytes: int | None) -> None:
        item.make_folder()
        write_arrays(item, staged.writes, fmt=fmt, process_index=context.process_index,
                     max_in_flight_bytes=max_in_flight_bytes)
        serialize_custom(item, staged.custom, use_ocdbt=fmt.use_ocdbt, use_zarr3=fmt.use_zarr3,
                         use_compression=fmt.compression is not None)
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
        finalize_custom(directory, self._custom_handlers)

    def restore(self, directory: Location, args: Any | None = None) -> Any:
        record = read_tree_record(directory)
        extras = _read_extras(directory, record)
        target = getattr(args, "item", None)
        restore_args = getattr(args, "restore_args", None)
        strict = getattr(args, "strict", True)
        partial = getattr(args, "partial_restore", False)
        transforms = getattr(args, "transforms", None)
        check_transform_options(args)
        if transforms is not None:
            if has_single_replica_args(restore_args):
                raise InvalidArgumentError(
                    "Expected either transforms or SingleReplicaArrayRestoreArgs in one "
                    "PyTreeRestore, got both. To fix, restore with transforms onto a target "
                    "with ordinary restore args, then reshard; or drop the transforms."
                )
            return restore_with_transforms(
                directory, record, extras, target=target, restore_args=restore_args,
                transforms=transforms, strict=strict,
                default_to_original=getattr(args, "transforms_default_to_original", True))
        plan = build_restore_plan(record, extras, target=target, restore_args=restore_args,
                                  strict=strict, partial=partial)
        if has_single_replica_args(restore_args):
            single_replica = self._single_replica or _registered_single_replica_handler()
            return single_replica.restore_plan(directory, record, extras, plan)
        return execute_plan(directory, record, plan, extras,
                            read_ahead_bytes=self._limits.restore_bytes)

    def metadata(self, directory: Location) -> Any:
        record = read_tree_record(directory)
        return describe_tree(directory, record, read_shardings(directory))


def _registered_single_replica_handler() -> SingleReplicaArrayHandler:
    """The jax.Array handler registered with `register_type_handler`, as MaxText does, or a default."""
    registered = GLOBAL_TYPE_HANDLER_REGISTRY.get(jax.Array)
    return registered if isinstance(registered, SingleReplicaArrayHandler) else SingleReplicaArrayHandler()


def _read_extras(item: Location, record: TreeRecord) -> SavedExtras:
    strings: dict[str, str] = {}
    if any(leaf.value_type == "string" for leaf in record.leaves):
        strings = read_json(item / STRINGS_FILE)
    shardings = read_shardings(item) if any(leaf.value_type == JAX_ARRAY for leaf in record.leaves) else {}
    return SavedExtras(strings=strings, shardings=shardings, key_impls=read_random_key_impls(item))


def read_array_metadatas(item: Location) -> dict[Location, list[dict[str, Any]]]:
    """The `array_metadata` objects of each `array_metadatas/process_<i>` file of `item`.

    Raises CorruptCheckpointError for a file without the list or an entry that is not an
    object; what each object holds is for the caller to check.
    """
    found: dict[Location, list[dict[str, Any]]] = {}
    for name in (item / ARRAY_METADATAS).list_names():
        location = item / ARRAY_METADATAS / name
        entries = read_json(location).get("array_metadatas")
        if not isinstance(entries, list):
            raise CorruptCheckpointError(
                f"Expected a list under 'array_metadatas' in {location}, got "
                f"{type(entries).__name__}. The file is corrupt; restore an earlier checkpoint.")
        metas = []
        for entry in entries:
            meta = entry.get("array_metadata") if isinstance(entry, dict) else None
            if not isinstance(meta, dict):
                raise CorruptCheckpointError(
                    f"Expected objects with an 'array_metadata' object in {location}, got "
                    f"{entry!r:.200}. The file is corrupt; restore an earlier checkpoint.")
            metas.append(meta)
        found[location] = metas
    return found


def read_random_key_impls(item: Location) -> dict[str, str]:
    """The PRNG implementation of each typed-key leaf, from `array_metadatas/process_<i>`."""
    key_impls: dict[str, str] = {}
    for metas in read_array_metadatas(item).values():
        for meta in metas:
            ext = meta.get("ext_metadata") or {}
            if isinstance(ext, dict) and isinstance(ext.get("random_key_impl"), str):
                key_impls[str(meta.get("param_name"))] = ext["random_key_impl"]
    return key_impls


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
    """Restore as the structure of `item` (or `restore_args`); `partial_restore` allows a subset.

    A leaf of `item` that is `PLACEHOLDER` is skipped and stays PLACEHOLDER. `transforms`
    (Orbax's: `{new_key_regex: Transform(...)}`, see `jaxpoint.core.transform_utils`) build
    `item`'s structure from differently named saved keys; `transforms_default_to_original`
    says whether keys no transform names come from the checkpoint (True) or from `item`.
    `legacy_transform_fn` is not supported: a non-None value raises.
    """

    item: Any = None
    restore_args: Any = None
    transforms: Any = None
    transforms_default_to_original: bool = True
    legacy_transform_fn: Any = None
    partial_restore: bool = False


__all__ = ["ArrayMetadata", "PyTreeCheckpointHandler", "PyTreeRestore", "PyTreeSave", "ScalarMetadata"]
