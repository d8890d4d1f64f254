"""Turning a tree into what gets written: leaf records, shard writes, strings, shardings.

One pass over the tree, no I/O. Each process keeps only the shards it owns with
`replica_id == 0`, so a replicated shard is written exactly once across all processes
(a per-process local checkpoint keeps every replica's, see `owned_shards`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jaxpoint.core.errors import InvalidArgumentError, UnsupportedLeafError
from jaxpoint.core.handlers.custom_leaves import CustomLeaf, custom_handler_for_leaf
from jaxpoint.core.handlers.host_copies import HostShard, is_pinned, start_host_copies
from jaxpoint.core.handlers.leaf_args import SaveArgs, as_dtype
from jaxpoint.core.handlers.orbax_leaf_args import taken_from_orbax
from jaxpoint.core.handlers.pytree_metadata import (
    JAX_ARRAY,
    NP_ARRAY,
    SCALAR,
    STRING,
    LeafRecord,
)
from jaxpoint.core.storage import ArrayWrite
from jaxpoint.core.storage.array_format import chunk_shape_for
from jaxpoint.core.tree.flatten import flatten_with_paths
from jaxpoint.core.tree.keys import TreePath

SCALAR_TYPES = (int, float, bool, complex, np.number, np.bool_)


@dataclasses.dataclass(kw_only=True)
class StagedTree:
    """Everything one process writes for a tree item."""

    records: list[LeafRecord] = dataclasses.field(default_factory=list)
    writes: list[ArrayWrite] = dataclasses.field(default_factory=list)
    strings: dict[str, str] = dataclasses.field(default_factory=dict)
    shardings: dict[str, jax.sharding.Sharding] = dataclasses.field(default_factory=dict)
    array_metadatas: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    custom: list[CustomLeaf] = dataclasses.field(default_factory=list)  # registered TypeHandlers

    @property
    def nbytes(self) -> int:
        return sum(data.nbytes for w in self.writes for _, data in w.shards)


def _empty_type_name(leaf: Any) -> str:
    if leaf is None:
        return "None"
    if isinstance(leaf, dict):
        return "Dict"
    return "List" if isinstance(leaf, list) else "Tuple"


def _host_view(data: Any, dtype: np.dtype | None, *, copy: bool) -> np.ndarray:
    array = np.asarray(data)
    if dtype is not None and array.dtype != dtype:
        return array.astype(dtype)
    return np.array(array, copy=True) if copy else array


def _chunk(write_shape: tuple[int, ...], dtype: np.dtype, args: SaveArgs | None) -> tuple[int, ...]:
    if args is not None and args.write_chunk_shape is not None:
        return tuple(max(1, int(d)) for d in args.write_chunk_shape)
    return chunk_shape_for(write_shape, dtype.itemsize, args.chunk_byte_size if args else None)


def _leaf_save_args(args: Any, leaf: Any, path: TreePath) -> SaveArgs | None:
    args = taken_from_orbax(args, where=f"save_args for {path}")
    if args is None or isinstance(args, SaveArgs):
        return args
    # An empty node (an optimizer's EmptyState, `{}`) is a leaf of the saved tree; args
    # built by mapping over the target (Flax's save_args_from_target) repeat it there.
    if type(args) is type(leaf) and not jax.tree_util.tree_leaves(args):
        return None
    raise InvalidArgumentError(
        f"Expected SaveArgs or None in save_args at {path}, got {type(args).__name__}. To "
        "fix, give that leaf SaveArgs(...) or None."
    )


def stage_tree(tree: Any, save_args: Any, *, is_primary: bool, copy: bool,
               pinned: bool | None = None, every_replica: bool = False) -> StagedTree:
    """Plans the save of `tree`; `copy` stages private host copies (async saves); `pinned`
    chooses pinned host staging as in `start_host_copies`; `every_replica` writes this
    process's shards of every replica, not only replica 0's (see `owned_shards`)."""
    entries, treedef = flatten_with_paths(tree)
    per_leaf_args: list[Any] = [None] * len(entries)
    if save_args is not None:
        per_leaf_args = [_leaf_save_args(args, leaf, path) for (path, leaf), args
                         in zip(entries, treedef.flatten_up_to(save_args), strict=True)]
    handlers = [custom_handler_for_leaf(leaf) for _, leaf in entries]
    arrays = [(i, leaf) for i, (_, leaf) in enumerate(entries)
              if isinstance(leaf, jax.Array) and handlers[i] is None]
    # Every device-to-host copy starts before the first one is waited on, so the copies of
    # all leaves overlap: staging a device state costs one transfer time, not a sum of them.
    # A leaf saved as another dtype is cast on the host, from pageable memory.
    copies = start_host_copies([(leaf, getattr(per_leaf_args[i], "dtype", None) is None)
                                for i, leaf in arrays], pinned=pinned,
                               every_replica=every_replica)
    host_shards: list[list[HostShard]] = [[] for _ in entries]
    for (i, _), shards in zip(arrays, copies, strict=True):
        host_shards[i] = shards
    staged = StagedTree()
    for (path, leaf), args, shards, handler in zip(entries, per_leaf_args, host_shards, handlers,
                                                    strict=True):
        if handler is not None:  # a registered custom TypeHandler writes this leaf
            staged.records.append(LeafRecord(path=path, value_type=handler.typestr()))
            staged.custom.append(CustomLeaf(path=path, value=leaf, args=args, handler=handler))
            continue
        _stage_leaf(staged, path, leaf, args, shards, is_primary=is_primary, copy=copy)
    return staged


def _stage_leaf(staged: StagedTree, path: TreePath, leaf: Any, args: SaveArgs | None,
                host_shards: list[HostShard], *, is_primary: bool, copy: bool) -> None:
    name = path.param_name
    dtype = as_dtype(args.dtype, where=f"SaveArgs for {path}") if args is not None else None
    if isinstance(leaf, jax.Array):
        ext = None
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            ext = {"random_key_impl": str(jax.random.key_impl(leaf))}
            leaf = jax.random.key_data(leaf)
        write_shape = tuple(leaf.sharding.shard_shape(leaf.shape))
        target_dtype = dtype or np.dtype(leaf.dtype)
        # No copy needed for async saves: a jax.Array is immutable, and the host view holds
        # an external reference that keeps its buffer alive through delete() and blocks
        # donation from reusing it; on accelerators the data is already a private host copy
        # (the one `start_host_copies` began), pinned ones converted by the background write.
        shards = [(index, data if is_pinned(data) else _host_view(data, dtype, copy=False))
                  for index, data in host_shards]
        chunk = _chunk(write_shape, target_dtype, args)
        staged.records.append(LeafRecord(path=path, value_type=JAX_ARRAY, write_shape=write_shape))
        staged.shardings[name] = leaf.sharding
        staged.array_metadatas.append({"array_metadata": {
            "param_name": name, "write_shape": list(write_shape), "chunk_shape": list(chunk),
            "ext_metadata": ext}})
        if shards:
            staged.writes.append(ArrayWrite(param_name=name, shape=tuple(leaf.shape),
                                            dtype=target_dtype, chunk_shape=chunk, shards=shards))
        return
    if isinstance(leaf, (np.ndarray, *SCALAR_TYPES)):
        value_type = NP_ARRAY if isinstance(leaf, np.ndarray) else SCALAR
        staged.records.append(LeafRecord(path=path, value_type=value_type))
        if is_primary:
            data = _host_view(leaf, dtype, copy=copy and isinstance(leaf, np.ndarray))
            full = tuple(slice(0, d) for d in data.shape)
            staged.writes.append(ArrayWrite(param_name=name, shape=data.shape, dtype=data.dtype,
                                            chunk_shape=_chunk(data.shape, data.dtype, args),
                                            shards=[(full, data)]))
        return
    if isinstance(leaf, str):
        staged.records.append(LeafRecord(path=path, value_type=STRING))
        staged.strings[name] = leaf
        return
    if leaf is None or (isinstance(leaf, dict | list | tuple) and len(leaf) == 0):
        staged.records.append(LeafRecord(path=path, value_type=_empty_type_name(leaf)))
        return
    raise UnsupportedLeafError(
        f"Expected a jax.Array, np.ndarray, scalar, str, None or empty container at tree path "
        f"{path}, got {type(leaf).__module__}.{type(leaf).__qualname__}. To fix, convert it "
        "(e.g. np.asarray), register its type as a pytree node, register a TypeHandler for it "
        "(ocp.type_handlers.register_type_handler), or save it in a separate item "
        "(args.JsonSave for plain data)."
    )
