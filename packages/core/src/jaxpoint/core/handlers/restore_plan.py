"""The restore plan of a tree item: what every leaf becomes, decided before any read.

A plan is data: one frozen `LeafPlan` per restored leaf (its kind, sharding, shape and
dtype, checked against the target), built from the tree metadata, the target and the
restore args without touching array data. `pytree_restore.execute_plans` runs it; the
single-replica restore runs the same plan with some leaves read by one replica only.
A new leaf kind is a new `LeafKind` member, chosen in `plan_leaf` and read in
`pytree_restore`.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jaxpoint.core.errors import CheckpointError, TreeMismatchError, UnsupportedLeafError
from jaxpoint.core.handlers.custom_leaves import custom_handler_for_restore
from jaxpoint.core.handlers.leaf_args import ArrayRestoreArgs, RestoreArgs, as_dtype
from jaxpoint.core.handlers.orbax_leaf_args import taken_from_orbax
from jaxpoint.core.handlers.pytree_metadata import (
    EMPTY_TYPES,
    KNOWN_VALUE_TYPES,
    NP_ARRAY,
    PLACEHOLDER_TYPE,
    SCALAR,
    STRING,
    LeafRecord,
    TreeRecord,
    empty_value,
)
from jaxpoint.core.handlers.sharding_metadata import sharding_from_description
from jaxpoint.core.tree.build import build_tree
from jaxpoint.core.tree.flatten import flatten_with_paths
from jaxpoint.core.tree.keys import TreePath
from jaxpoint.core.tree.placeholder import PLACEHOLDER


class LeafKind(enum.Enum):
    """What a restored leaf becomes, and so how it is read."""

    JAX_ARRAY = "jax.Array"
    NUMPY_ARRAY = "np.ndarray"
    SCALAR = "scalar"
    RANDOM_KEY = "random key"  # stored key data, wrapped with its saved implementation
    STRING = "string"
    EMPTY = "empty"  # None or an empty container: no data
    PLACEHOLDER = "placeholder"  # skipped: the result holds PLACEHOLDER
    CUSTOM = "custom"  # a registered TypeHandler's `deserialize` makes the value

    @property
    def is_read(self) -> bool:
        """Whether leaves of this kind read array data."""
        return self in _READ_KINDS


_READ_KINDS = frozenset({LeafKind.JAX_ARRAY, LeafKind.NUMPY_ARRAY, LeafKind.SCALAR,
                         LeafKind.RANDOM_KEY})


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class LeafPlan:
    """How one stored leaf becomes one restored value.

    `shape` / `dtype` None: as stored. `sharding`: the target sharding of a jax.Array (and
    of a random key restored as one). `strict`: a stored shape other than `shape` is an
    error rather than padded or truncated.
    """

    path: TreePath
    kind: LeafKind
    sharding: jax.sharding.Sharding | None = None
    shape: tuple[int, ...] | None = None
    dtype: np.dtype | None = None
    strict: bool = True
    scalar_type: type | None = None
    empty_value: Any = None
    key_impl: str | None = None
    custom_handler: Any = None  # the TypeHandler of a CUSTOM leaf
    custom_args: Any = None  # its restore args

    @property
    def array_sharding(self) -> jax.sharding.Sharding:
        """`sharding` of a JAX_ARRAY leaf, which building the plan always sets."""
        if self.sharding is None:
            raise CheckpointError(
                f"Expected the restore plan of the jax.Array at tree path {self.path} to hold a "
                "sharding, found none. This is a bug in jaxpoint: please report it."
            )
        return self.sharding


def shard_indices(sharding: jax.sharding.Sharding,
                  shape: tuple[int, ...]) -> list[tuple[Any, tuple[slice, ...]]]:
    """(device, index) of every shard of `shape` on this process's devices of `sharding`."""
    found = []
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        if index is None:
            raise CheckpointError(
                f"Expected JAX to give the index of the shard of {sharding} on {device} for "
                f"shape {shape}, got None. To fix, restore onto a NamedSharding."
            )
        found.append((device, tuple(index)))
    return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class SavedExtras:
    """Per-item side data the plan needs: strings, saved shardings, random-key impls."""

    strings: dict[str, Any]
    shardings: Any  # Mapping[str, dict]: parameter name -> saved sharding description
    key_impls: dict[str, str]


@dataclasses.dataclass(frozen=True, kw_only=True)
class RestorePlan:
    """Every leaf's plan in the result's leaf order, and how to rebuild the result.

    `leaf_args`: each leaf's restore args (None where none were given). `treedef`: the
    target's structure; None rebuilds nested dicts and lists from the saved paths.
    """

    leaves: tuple[LeafPlan, ...]
    leaf_args: tuple[Any, ...]
    treedef: Any = None

    def rebuild(self, values: Sequence[Any]) -> Any:
        """The restored tree from `values`, one per leaf in plan order."""
        if self.treedef is None:
            return build_tree((plan.path, value) for plan, value in zip(self.leaves, values, strict=True))
        return jax.tree_util.tree_unflatten(self.treedef, values)


def _default_sharding() -> jax.sharding.Sharding:
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _is_key_dtype(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _sharding_of(target: Any) -> jax.sharding.Sharding | None:
    sharding = getattr(target, "sharding", None)
    return sharding if isinstance(sharding, jax.sharding.Sharding) else None


def _saved_or_default(name: str, extras: SavedExtras) -> jax.sharding.Sharding:
    return sharding_from_description(extras.shardings.get(name)) or _default_sharding()


def plan_leaf(record: LeafRecord, target: Any, args: Any, extras: SavedExtras,
              *, strict: bool) -> LeafPlan:
    """Decides the kind, sharding, shape and dtype of one restored leaf."""
    path, value_type = record.path, record.value_type
    custom = custom_handler_for_restore(value_type, args)
    if custom is not None:
        return LeafPlan(path=path, kind=LeafKind.CUSTOM, custom_handler=custom, custom_args=args)
    if value_type not in KNOWN_VALUE_TYPES:
        raise UnsupportedLeafError(
            f"Expected a registered TypeHandler for value type {value_type!r} at tree path "
            f"{path}, found none. The leaf was saved by a custom handler. To fix, call "
            "ocp.type_handlers.register_type_handler(<its type>, <its handler>) before "
            "restoring."
        )
    if value_type in EMPTY_TYPES:
        value = target if target is not None or value_type == "None" else empty_value(value_type)
        return LeafPlan(path=path, kind=LeafKind.EMPTY, empty_value=value)
    if value_type == STRING:
        return LeafPlan(path=path, kind=LeafKind.STRING)
    if value_type == PLACEHOLDER_TYPE:
        return LeafPlan(path=path, kind=LeafKind.PLACEHOLDER)
    name = path.param_name
    kind, sharding, shape, dtype, scalar_type = LeafKind.JAX_ARRAY, None, None, None, None
    if isinstance(args, RestoreArgs) and args.dtype is not None:
        dtype = as_dtype(args.dtype, where=f"RestoreArgs for {path}")
    restore_type = args.restore_type if isinstance(args, RestoreArgs) else None
    if isinstance(args, ArrayRestoreArgs):
        sharding = args.resolved_sharding() or _sharding_of(target) or _saved_or_default(name, extras)
        shape = tuple(args.global_shape or args.shape or ()) or None
        strict = args.strict and strict
    elif restore_type is not None and restore_type is not jax.Array:
        kind = LeafKind.NUMPY_ARRAY if restore_type is np.ndarray else LeafKind.SCALAR
        scalar_type = None if restore_type is np.ndarray else restore_type
    elif isinstance(target, jax.Array | jax.ShapeDtypeStruct):
        shape = tuple(target.shape)
        if dtype is None and not _is_key_dtype(target.dtype):
            dtype = np.dtype(target.dtype)
        sharding = _sharding_of(target) or _saved_or_default(name, extras)
    elif isinstance(target, np.ndarray):
        kind, shape = LeafKind.NUMPY_ARRAY, target.shape
        dtype = target.dtype if dtype is None else dtype
    elif target is not None and isinstance(target, int | float | bool | complex | np.number | np.bool_):
        kind, scalar_type = LeafKind.SCALAR, type(target)
    elif value_type == NP_ARRAY:
        kind = LeafKind.NUMPY_ARRAY
    elif value_type == SCALAR:
        kind = LeafKind.SCALAR
    else:
        sharding = _saved_or_default(name, extras)
    key_impl = extras.key_impls.get(name) if extras.key_impls else None
    if key_impl is not None:  # read as stored, then wrapped; placed only if a jax.Array
        return LeafPlan(path=path, kind=LeafKind.RANDOM_KEY, key_impl=key_impl,
                        sharding=sharding if kind is LeafKind.JAX_ARRAY else None)
    return LeafPlan(path=path, kind=kind, sharding=sharding, shape=shape, dtype=dtype,
                    strict=strict, scalar_type=scalar_type)


def build_restore_plan(record: TreeRecord, extras: SavedExtras, *, target: Any,
                       restore_args: Any, strict: bool, partial: bool) -> RestorePlan:
    """Plans the restore of `record` as the structure of `target` (or `restore_args`).

    Without either, every saved leaf is restored as saved. A leaf of the target that is
    `PLACEHOLDER` skips the saved leaf, or the saved subtree, at its path and stays
    PLACEHOLDER. `partial`: saved leaves the target lacks are skipped.
    """
    structure = target if target is not None else restore_args
    if structure is None:
        leaves = tuple(plan_leaf(leaf, None, None, extras, strict=strict) for leaf in record.leaves)
        return RestorePlan(leaves=leaves, leaf_args=(None,) * len(leaves))
    entries, treedef = flatten_with_paths(structure, for_reading=True)
    if target is not None:
        targets = [leaf for _, leaf in entries]
        leaf_args = treedef.flatten_up_to(restore_args) if restore_args is not None else [None] * len(entries)
    else:
        targets, leaf_args = [None] * len(entries), [leaf for _, leaf in entries]
    leaf_args = [taken_from_orbax(args, where=f"restore_args for {path}")
                 for (path, _), args in zip(entries, leaf_args, strict=True)]
    saved = {leaf.path.param_name: leaf for leaf in record.leaves}
    plans, missing, covered = [], [], set()
    for (path, _), leaf_target, args in zip(entries, targets, leaf_args, strict=True):
        record_leaf = saved.get(path.param_name)
        if (leaf_target if target is not None else args) is PLACEHOLDER:
            if record_leaf is None:
                inside = _saved_below(record, path)
                covered.update(inside)
                if not inside:
                    missing.append(path.param_name)
            plans.append(LeafPlan(path=path, kind=LeafKind.PLACEHOLDER))
        elif record_leaf is None:
            missing.append(path.param_name)
        else:
            plans.append(plan_leaf(record_leaf, leaf_target, args, extras, strict=strict))
    wanted = {plan.path.param_name for plan in plans}
    extra = sorted(set(saved) - wanted - covered)
    if missing or (extra and not partial):
        _raise_mismatch(missing, extra if not partial else [])
    return RestorePlan(leaves=tuple(plans), leaf_args=tuple(leaf_args), treedef=treedef)


def _saved_below(record: TreeRecord, prefix: TreePath) -> set[str]:
    """Parameter names of the saved leaves inside the subtree at `prefix`."""
    depth = len(prefix.keys)
    return {leaf.path.param_name for leaf in record.leaves
            if len(leaf.path.keys) > depth and leaf.path.keys[:depth] == prefix.keys}


def _raise_mismatch(missing: list[str], extra: list[str]) -> None:
    parts = []
    if missing:
        parts.append(f"the target has keys the checkpoint lacks: {missing[:20]}")
    if extra:
        parts.append(f"the checkpoint has keys the target lacks: {extra[:20]}")
    raise TreeMismatchError(
        f"Expected the target tree to match the saved tree, but {'; '.join(parts)}. To fix, "
        "pass a target with the saved structure (list it with "
        "ocp.StandardCheckpointer().metadata(path).item_metadata, see "
        "docs/getting-started.md), restore a subset with PyTreeRestore(item, "
        "partial_restore=True), or put PLACEHOLDER where a saved leaf or subtree is to be "
        "skipped."
    )
