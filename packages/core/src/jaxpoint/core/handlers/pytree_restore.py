"""Restoring a tree item: match the target, plan each leaf, read, assemble arrays.

Each target shard reads only its own region of the stored array; shards that several
devices share are read once. Mismatches are errors naming the tree path, unless the
caller asked for `strict=False` (pad or truncate shapes, cast dtypes).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jaxpoint.core.errors import CorruptCheckpointError, TreeMismatchError
from jaxpoint.core.handlers.leaf_args import ArrayRestoreArgs, RestoreArgs, as_dtype
from jaxpoint.core.handlers.pytree_metadata import (
    EMPTY_TYPES,
    NP_ARRAY,
    SCALAR,
    STRING,
    LeafRecord,
    TreeRecord,
)
from jaxpoint.core.handlers.sharding_metadata import sharding_from_description
from jaxpoint.core.storage import ArrayRead, Location, open_arrays, read_arrays
from jaxpoint.core.tree import TreePath, build_tree, flatten_with_paths

logger = logging.getLogger(__name__)

# Bytes read ahead when leaves go to an accelerator: each host buffer is released once
# copied to its device, so reading further ahead costs host memory only while in flight.
DEVICE_READ_AHEAD_BYTES = 1024 * 1024 * 1024

# A region as ((start, stop), ...) per dimension: hashable, unlike slices on Python 3.11.
Region = tuple[tuple[int, int], ...]


@dataclasses.dataclass(kw_only=True)
class LeafPlan:
    """How one stored leaf becomes one restored value."""

    record: LeafRecord
    kind: str  # "jax", "numpy", "scalar", "string" or "empty"
    sharding: jax.sharding.Sharding | None = None
    shape: tuple[int, ...] | None = None  # None: the stored shape
    dtype: np.dtype | None = None  # None: the stored dtype
    dtype_is_explicit: bool = False
    strict: bool = True
    scalar_type: type | None = None
    empty_value: Any = None

    @property
    def path(self) -> TreePath:
        return self.record.path


@dataclasses.dataclass(frozen=True, kw_only=True)
class SavedExtras:
    """Per-item side data the plan needs: strings, saved shardings, random-key impls."""

    strings: dict[str, str]
    shardings: dict[str, dict[str, Any]]
    key_impls: dict[str, str]


def _default_sharding() -> jax.sharding.Sharding:
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def plan_leaf(record: LeafRecord, target: Any, args: Any, extras: SavedExtras,
              *, strict: bool) -> LeafPlan:
    """Decides the kind, sharding, shape and dtype of one restored leaf."""
    name = record.path.param_name
    if record.value_type in EMPTY_TYPES:
        value = target if target is not None or record.value_type == "None" else EMPTY_TYPES[record.value_type]()
        return LeafPlan(record=record, kind="empty", empty_value=value)
    if record.value_type == STRING:
        return LeafPlan(record=record, kind="string")
    plan = LeafPlan(record=record, kind="jax", strict=strict)
    if isinstance(args, RestoreArgs):
        if args.dtype is not None:
            plan.dtype = as_dtype(args.dtype, where=f"RestoreArgs for {record.path}")
            plan.dtype_is_explicit = True
        if isinstance(args, ArrayRestoreArgs):
            plan.sharding = args.resolved_sharding()
            plan.shape = tuple(args.global_shape or args.shape or ()) or None
            plan.strict = args.strict and strict
            if plan.sharding is None:
                plan.sharding = _sharding_of(target) or _saved_or_default(name, extras)
            return plan
        restore_type = args.restore_type
        if restore_type is not None and restore_type is not jax.Array:
            plan.kind = "numpy" if restore_type is np.ndarray else "scalar"
            plan.scalar_type = None if restore_type is np.ndarray else restore_type
            return plan
    if isinstance(target, jax.Array | jax.ShapeDtypeStruct):
        plan.shape = tuple(target.shape)
        if not plan.dtype_is_explicit:
            plan.dtype = np.dtype(target.dtype) if not _is_key_dtype(target.dtype) else None
        plan.sharding = _sharding_of(target) or _saved_or_default(name, extras)
        return plan
    if isinstance(target, np.ndarray):
        plan.kind, plan.shape = "numpy", target.shape
        if not plan.dtype_is_explicit:
            plan.dtype = target.dtype
        return plan
    if target is not None and isinstance(target, int | float | bool | complex | np.number | np.bool_):
        plan.kind, plan.scalar_type = "scalar", type(target)
        return plan
    if record.value_type == NP_ARRAY:
        plan.kind = "numpy"
    elif record.value_type == SCALAR:
        plan.kind = "scalar"
    else:
        plan.sharding = _saved_or_default(name, extras)
    return plan


def _warn_about_lost_shardings(item: Location, plans: list[LeafPlan],
                               extras: SavedExtras) -> None:
    """One warning when arrays saved over devices missing here land on one device."""
    lost = 0
    for plan in plans:
        saved = extras.shardings.get(plan.path.param_name) if plan.kind == "jax" else None
        if saved and isinstance(plan.sharding, jax.sharding.SingleDeviceSharding) and (
                saved.get("sharding_type") != "SingleDeviceSharding"
                or saved.get("device_id") not in (None, next(iter(plan.sharding.device_set)).id)):
            lost += 1
    if lost:
        logger.warning(
            "%d array(s) in %s were saved on devices this process does not have (it sees %d); "
            "restored without a target, they are placed on one device, %s. To restore onto "
            "shardings of your choice, pass a target whose leaves carry them, e.g. "
            "jax.ShapeDtypeStruct(shape, dtype, sharding=...).", lost, item,
            jax.device_count(), jax.local_devices()[0])


def _is_key_dtype(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _sharding_of(target: Any) -> jax.sharding.Sharding | None:
    sharding = getattr(target, "sharding", None)
    return sharding if isinstance(sharding, jax.sharding.Sharding) else None


def _saved_or_default(name: str, extras: SavedExtras) -> jax.sharding.Sharding:
    return sharding_from_description(extras.shardings.get(name)) or _default_sharding()


def match_target(record: TreeRecord, structure: Any, *, partial: bool) -> tuple[list[tuple[TreePath, Any]], Any]:
    """Flattens the target and checks its paths against the saved ones."""
    entries, treedef = flatten_with_paths(structure)
    saved = {leaf.path.param_name for leaf in record.leaves}
    wanted = [path.param_name for path, _ in entries]
    missing = [name for name in wanted if name not in saved]
    extra = sorted(saved - set(wanted))
    if missing or (extra and not partial):
        parts = []
        if missing:
            parts.append(f"the target has keys the checkpoint lacks: {missing[:20]}")
        if extra and not partial:
            parts.append(f"the checkpoint has keys the target lacks: {extra[:20]}")
        raise TreeMismatchError(
            f"Expected the target tree to match the saved tree, but {'; '.join(parts)}. To fix, "
            "pass a target with the saved structure (list it with "
            "ocp.StandardCheckpointer().metadata(path).item_metadata, see "
            "docs/getting-started.md), or restore a subset "
            "with PyTreeRestore(item, partial_restore=True)."
        )
    return entries, treedef


def _normalize(index: Sequence[slice], shape: tuple[int, ...]) -> Region:
    return tuple(s.indices(d)[:2] for s, d in zip(index, shape, strict=True))


def _regions(plan: LeafPlan, shape: tuple[int, ...]) -> tuple[list[Region], list[tuple[Any, Region]]]:
    """Unique regions to read and, for jax leaves, (device, region) placements."""
    if plan.kind != "jax":
        return [tuple((0, d) for d in shape)], []
    if plan.sharding.is_fully_replicated:  # skips JAX's per-device index computation
        whole = tuple((0, d) for d in shape)
        return [whole], [(device, whole) for device in plan.sharding.addressable_devices]
    placements = [(device, _normalize(index, shape)) for device, index in
                  plan.sharding.addressable_devices_indices_map(shape).items()]
    unique = list(dict.fromkeys(region for _, region in placements))
    return unique, placements


def _check(plan: LeafPlan, stored_shape: tuple[int, ...], stored_dtype: np.dtype,
           where: Location) -> tuple[tuple[int, ...], np.dtype]:
    shape = plan.shape if plan.shape is not None else stored_shape
    dtype = plan.dtype if plan.dtype is not None else stored_dtype
    problems = []
    if shape != stored_shape:
        problems.append(f"shape {stored_shape} was saved, the target asks for {shape}")
    if dtype != stored_dtype and not plan.dtype_is_explicit:
        problems.append(f"dtype {stored_dtype} was saved, the target asks for {dtype}")
    if problems and plan.strict:
        raise TreeMismatchError(
            f"Mismatch at tree path {plan.path} of {where}: {'; '.join(problems)}. To fix, "
            "make the target match, or pass strict=False (StandardRestore(..., strict=False) "
            "or ArrayRestoreArgs(strict=False)) to pad/truncate and cast."
        )
    return shape, dtype


def _clipped_read(region: Region, stored_shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(start, d), min(stop, d))
                 for (start, stop), d in zip(region, stored_shape, strict=True))


def _fit(buffer: np.ndarray, region: Region, dtype: np.dtype) -> np.ndarray:
    wanted = tuple(stop - start for start, stop in region)
    if buffer.shape == wanted:
        return buffer
    padded = np.zeros(wanted, dtype=dtype)
    padded[tuple(slice(0, d) for d in buffer.shape)] = buffer
    return padded


def execute_plans(item: Location, record: TreeRecord, plans: Sequence[LeafPlan],
                  extras: SavedExtras) -> list[Any]:
    """Reads every array leaf concurrently and returns the restored values in plan order."""
    array_plans = [p for p in plans if p.kind in ("jax", "numpy", "scalar")]
    stores = open_arrays(item, [p.path.param_name for p in array_plans],
                         use_ocdbt=record.use_ocdbt, use_zarr3=record.use_zarr3,
                         has_every_chunk=record.has_every_chunk)
    reads, layouts = [], []
    for plan, store in zip(array_plans, stores, strict=True):
        stored_shape, stored_dtype = store.shape, store.dtype
        key_impl = extras.key_impls.get(plan.path.param_name)
        if key_impl is not None:
            plan.shape, plan.dtype, sharding = None, None, plan.sharding
            plan.sharding = None
            plan.kind = "numpy" if plan.kind == "jax" else plan.kind
        else:
            sharding = None
        shape, dtype = _check(plan, stored_shape, stored_dtype, item)
        unique, placements = _regions(plan, shape)
        reads.append(ArrayRead(param_name=plan.path.param_name, dtype=dtype,
                               regions=[_clipped_read(r, stored_shape) for r in unique]))
        layouts.append((shape, dtype, unique, placements, key_impl, sharding))
    _check_host_memory(item, reads)

    on_accelerator: dict[Any, bool] = {}  # per distinct sharding: trees share a few
    for plan in array_plans:
        if plan.kind == "jax" and plan.sharding not in on_accelerator:
            on_accelerator[plan.sharding] = _on_accelerator(plan.sharding)

    def to_accelerator(index: int, data: list[np.ndarray]) -> Any:
        # Copied to the device while later leaves are still being read; the host buffers go.
        plan, layout = array_plans[index], layouts[index]
        if plan.kind == "jax" and on_accelerator[plan.sharding]:
            return _Placed(_assemble(plan, layout, data))
        return data

    to_devices = any(on_accelerator.values())
    buffers = read_arrays(item, stores, reads, consume=to_accelerator if to_devices else None,
                          read_ahead_bytes=DEVICE_READ_AHEAD_BYTES if to_devices else None)
    values: dict[int, Any] = {}
    whole: list[tuple[LeafPlan, np.ndarray]] = []
    for plan, layout, data in zip(array_plans, layouts, buffers, strict=True):
        if isinstance(data, _Placed):
            values[id(plan)] = data.array
        elif _is_whole(plan, layout):
            whole.append((plan, _fit(data[0], layout[2][0], layout[1])))
        else:
            values[id(plan)] = _assemble(plan, layout, data)
    if whole:
        # One batched transfer for every leaf read whole (small, replicated, single-device).
        placed = jax.device_put([buffer for _, buffer in whole], [plan.sharding for plan, _ in whole])
        values.update((id(plan), array) for (plan, _), array in zip(whole, placed, strict=True))
    result = []
    for plan in plans:
        if plan.kind == "empty":
            result.append(plan.empty_value)
        elif plan.kind == "string":
            result.append(_saved_string(item, plan, extras))
        else:
            result.append(values[id(plan)])
    return result


@dataclasses.dataclass(frozen=True)
class _Placed:
    """A leaf already on its devices."""

    array: Any


def _on_accelerator(sharding: jax.sharding.Sharding | None) -> bool:
    return sharding is not None and any(d.platform != "cpu" for d in sharding.device_set)


def _saved_string(item: Location, plan: LeafPlan, extras: SavedExtras) -> str:
    value = extras.strings.get(plan.path.param_name)
    if not isinstance(value, str):
        raise CorruptCheckpointError(
            f"Expected string leaf {plan.path.param_name!r} in {item / '_strings.json'}, found "
            f"{type(value).__name__}. The checkpoint is damaged; restore an earlier one."
        )
    return value


def _host_memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _check_host_memory(item: Location, reads: Sequence[ArrayRead]) -> None:
    """Refuses reads larger than this host's memory before TensorStore allocates them.

    Shapes come from stored zarr metadata: a damaged or hostile header must fail here
    with an error, not abort the process inside an allocation.
    """
    sizes = [(math.prod(s.stop - s.start for s in region) * np.dtype(read.dtype).itemsize,
              read.param_name) for read in reads for region in read.regions]
    needed = sum(size for size, _ in sizes)
    available = _host_memory_bytes()
    if needed > available:
        largest, name = max(sizes)
        raise CorruptCheckpointError(
            f"Restoring {item} would need {needed / 2**30:.1f} GiB of host memory (parameter "
            f"{name!r} alone {largest / 2**30:.1f} GiB), more than this host's "
            f"{available / 2**30:.1f} GiB. The shapes come from the stored array metadata, which "
            "is corrupt unless the arrays really are that large; then restore onto a target "
            "sharded over more processes."
        )


def _is_whole(plan: LeafPlan, layout: tuple) -> bool:
    shape, _, unique, _, key_impl, _ = layout
    # jax.device_put onto devices of other processes checks, by a collective, that every
    # process passed the same value: such leaves are assembled from local shards instead.
    return (plan.kind == "jax" and key_impl is None and len(unique) == 1
            and unique[0] == tuple((0, d) for d in shape) and plan.sharding.is_fully_addressable)


def _assemble(plan: LeafPlan, layout: tuple, data: list[np.ndarray]) -> Any:
    shape, dtype, unique, placements, key_impl, key_sharding = layout
    fitted = {region: _fit(buffer, region, dtype) for region, buffer in zip(unique, data, strict=True)}
    if key_impl is not None:
        keys = jax.random.wrap_key_data(fitted[unique[0]], impl=key_impl)
        return jax.device_put(keys, key_sharding) if key_sharding is not None else keys
    if plan.kind == "numpy":
        return fitted[unique[0]]
    if plan.kind == "scalar":
        value = fitted[unique[0]]
        if plan.scalar_type is not None and plan.scalar_type not in (int, float, bool, complex):
            return plan.scalar_type(value)
        item = value.item()
        return plan.scalar_type(item) if plan.scalar_type is not None else item
    shards, adopted = [], set()
    for device, region in placements:
        buffer = fitted[region]
        if region in adopted and device.platform == "cpu":
            # device_put on CPU adopts aligned host buffers; replicas must not share one.
            buffer = np.copy(buffer)
        adopted.add(region)
        shards.append(jax.device_put(buffer, device))
    return jax.make_array_from_single_device_arrays(shape, plan.sharding, shards)


def restore_tree(item: Location, record: TreeRecord, extras: SavedExtras, *, target: Any,
                 restore_args: Any, strict: bool, partial: bool) -> Any:
    """Restores the item as the target's structure, or as nested dicts/lists without one."""
    structure = target if target is not None else restore_args
    if structure is None:
        plans = [plan_leaf(leaf, None, None, extras, strict=strict) for leaf in record.leaves]
        _warn_about_lost_shardings(item, plans, extras)
        values = execute_plans(item, record, plans, extras)
        return build_tree((plan.path, value) for plan, value in zip(plans, values, strict=True))
    entries, treedef = match_target(record, structure, partial=partial)
    saved = {leaf.path.param_name: leaf for leaf in record.leaves}
    if target is not None and restore_args is not None:
        args_leaves = treedef.flatten_up_to(restore_args)
        target_leaves = [leaf for _, leaf in entries]
    elif target is not None:
        args_leaves, target_leaves = [None] * len(entries), [leaf for _, leaf in entries]
    else:
        args_leaves, target_leaves = [leaf for _, leaf in entries], [None] * len(entries)
    plans = [plan_leaf(saved[path.param_name], t, a, extras, strict=strict)
             for (path, _), t, a in zip(entries, target_leaves, args_leaves, strict=True)]
    values = execute_plans(item, record, plans, extras)
    return jax.tree_util.tree_unflatten(treedef, values)
