"""Restoring a tree item: run its restore plan (see restore_plan): read, assemble arrays.

Each target shard reads only its own region of the stored array; shards that several
devices share are read once. Mismatches are errors naming the tree path, unless the
caller asked for `strict=False` (pad or truncate shapes). A target dtype other than the
saved one casts, as Orbax does.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any, cast

import jax
import numpy as np
from jaxpoint.core.errors import CorruptCheckpointError, TreeMismatchError
from jaxpoint.core.handlers.custom_leaves import deserialize_custom
from jaxpoint.core.handlers.pytree_metadata import TreeRecord
from jaxpoint.core.handlers.restore_plan import (
    LeafKind,
    LeafPlan,
    RestorePlan,
    SavedExtras,
    shard_indices,
)
from jaxpoint.core.storage import ArrayRead, Location, open_arrays, read_arrays
from jaxpoint.core.tree.placeholder import PLACEHOLDER

logger = logging.getLogger(__name__)

# A region as ((start, stop), ...) per dimension: hashable, unlike slices on Python 3.11.
Region = tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReadLayout:
    """Where one leaf's reads go: its final shape and dtype, the unique regions read, and
    for a jax.Array the (device, region) of every local shard."""

    shape: tuple[int, ...]
    dtype: np.dtype
    regions: list[Region]
    placements: list[tuple[Any, Region]]


def _normalize(index: Sequence[slice], shape: tuple[int, ...]) -> Region:
    return tuple(s.indices(d)[:2] for s, d in zip(index, shape, strict=True))


def _regions(plan: LeafPlan, shape: tuple[int, ...]) -> tuple[list[Region], list[tuple[Any, Region]]]:
    """Unique regions to read and, for jax leaves, (device, region) placements."""
    if plan.kind is not LeafKind.JAX_ARRAY:
        return [tuple((0, d) for d in shape)], []
    sharding = plan.array_sharding
    if sharding.is_fully_replicated:  # skips JAX's per-device index computation
        whole = tuple((0, d) for d in shape)
        return [whole], [(device, whole) for device in sharding.addressable_devices]
    placements = [(device, _normalize(index, shape))
                  for device, index in shard_indices(sharding, shape)]
    unique = list(dict.fromkeys(region for _, region in placements))
    return unique, placements


def _check(plan: LeafPlan, stored_shape: tuple[int, ...], stored_dtype: np.dtype,
           where: Location) -> tuple[tuple[int, ...], np.dtype]:
    shape = plan.shape if plan.shape is not None else stored_shape
    dtype = plan.dtype if plan.dtype is not None else stored_dtype
    # A dtype that differs from the saved one is the caller's request: cast, as Orbax does.
    if shape != stored_shape and plan.strict:
        raise TreeMismatchError(
            f"Mismatch at tree path {plan.path} of {where}: shape {stored_shape} was saved, "
            f"the target asks for {shape}. To fix, make the target's shape match, or pass "
            "strict=False (StandardRestore(..., strict=False) or ArrayRestoreArgs(strict=False)) "
            "to pad or truncate."
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
                  extras: SavedExtras, *, read_ahead_bytes: int | None = None) -> list[Any]:
    """Reads every array leaf concurrently and returns the restored values in plan order."""
    array_plans = [p for p in plans if p.kind.is_read]
    stores = open_arrays(item, [p.path.param_name for p in array_plans],
                         use_ocdbt=record.use_ocdbt, use_zarr3=record.use_zarr3,
                         has_every_chunk=record.has_every_chunk)
    reads, layouts = [], []
    for plan, store in zip(array_plans, stores, strict=True):
        shape, dtype = _check(plan, store.shape, store.dtype, item)
        unique, placements = _regions(plan, shape)
        reads.append(ArrayRead(param_name=plan.path.param_name, dtype=dtype,
                               regions=[_clipped_read(r, store.shape) for r in unique]))
        layouts.append(ReadLayout(shape=shape, dtype=dtype, regions=unique, placements=placements))
    _check_host_memory(item, reads)

    on_accelerator: dict[Any, bool] = {}  # per distinct sharding: trees share a few
    for plan in array_plans:
        if plan.kind is LeafKind.JAX_ARRAY and plan.sharding not in on_accelerator:
            on_accelerator[plan.sharding] = _on_accelerator(plan.sharding)

    def to_accelerator(index: int, data: list[np.ndarray]) -> Any:
        # Copied to the device while later leaves are still being read; the host buffers go.
        plan = array_plans[index]
        if plan.kind is LeafKind.JAX_ARRAY and on_accelerator[plan.sharding]:
            return _Placed(_assemble(plan, layouts[index], data))
        return data

    to_devices = any(on_accelerator.values())
    if read_ahead_bytes is None:  # restore_concurrent_gb, when the handler was given one
        read_ahead_bytes = item.options.read_bound(to_accelerator=to_devices)
    buffers = read_arrays(item, stores, reads, consume=to_accelerator if to_devices else None,
                          read_ahead_bytes=read_ahead_bytes)
    read_values: list[Any] = [None] * len(array_plans)
    whole: list[tuple[int, np.ndarray]] = []
    for index, (plan, layout, data) in enumerate(zip(array_plans, layouts, buffers, strict=True)):
        if isinstance(data, _Placed):
            read_values[index] = data.array
        elif _is_whole(plan, layout):
            whole.append((index, _fit(data[0], layout.regions[0], layout.dtype)))
        else:
            read_values[index] = _assemble(plan, layout, data)
    if whole:
        # One batched transfer for every leaf read whole (small, replicated, single-device).
        placed = jax.device_put([buffer for _, buffer in whole],
                                [array_plans[index].sharding for index, _ in whole])
        for (index, _), array in zip(whole, placed, strict=True):
            read_values[index] = array
    next_read = iter(read_values)
    next_custom = iter(_custom_values(item, record, plans))
    result = []
    for plan in plans:
        if plan.kind.is_read:
            result.append(next(next_read))
        elif plan.kind is LeafKind.CUSTOM:
            result.append(next(next_custom))
        elif plan.kind is LeafKind.EMPTY:
            result.append(plan.empty_value)
        elif plan.kind is LeafKind.STRING:
            result.append(_saved_string(item, plan, extras))
        else:
            result.append(PLACEHOLDER)
    return result


def _custom_values(item: Location, record: TreeRecord, plans: Sequence[LeafPlan]) -> list[Any]:
    """Values of the leaves a registered custom TypeHandler restores, in plan order."""
    requests = [(plan.path, plan.custom_handler, plan.custom_args) for plan in plans
                if plan.kind is LeafKind.CUSTOM]
    if not requests:
        return []
    return deserialize_custom(item, requests, use_ocdbt=record.use_ocdbt,
                              use_zarr3=record.use_zarr3)


@dataclasses.dataclass(frozen=True)
class _Placed:
    """A leaf already on its devices."""

    array: Any


def _on_accelerator(sharding: jax.sharding.Sharding | None) -> bool:
    devices: Iterable[Any] = sharding.device_set if sharding is not None else ()
    return any(d.platform != "cpu" for d in devices)


def _saved_string(item: Location, plan: LeafPlan, extras: SavedExtras) -> str:
    value: Any = extras.strings.get(plan.path.param_name)
    if value is None and "/" in plan.path.param_name:
        # Orbax stores strings by JSON pointer: a '/' in the name nests the entry.
        value = extras.strings
        for part in plan.path.param_name.split("/"):
            value = value.get(part) if isinstance(value, dict) else None
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


def _is_whole(plan: LeafPlan, layout: ReadLayout) -> bool:
    # jax.device_put onto devices of other processes checks, by a collective, that every
    # process passed the same value: such leaves are assembled from local shards instead.
    return (plan.kind is LeafKind.JAX_ARRAY and len(layout.regions) == 1
            and layout.regions[0] == tuple((0, d) for d in layout.shape)
            and plan.array_sharding.is_fully_addressable)


def _placed_keys(data: np.ndarray, plan: LeafPlan) -> Any:
    """The key data wrapped with its implementation, on the plan's sharding.

    A sharding that spans other processes' devices is filled from this process's shards
    (jax.device_put would check by a collective that every process passed the same value,
    and refuses non-addressable shardings); wrapping key data runs no computation.
    """
    sharding = plan.sharding
    host_keys = cast(jax.Array, data)  # wrap_key_data takes host arrays too, without a copy
    if sharding is None:
        return jax.random.wrap_key_data(host_keys, impl=plan.key_impl)
    if sharding.is_fully_addressable or not isinstance(sharding, jax.sharding.NamedSharding):
        return jax.device_put(jax.random.wrap_key_data(host_keys, impl=plan.key_impl), sharding)
    placed = jax.make_array_from_callback(data.shape, sharding, lambda index: data[index])
    return jax.random.wrap_key_data(placed, impl=plan.key_impl)


def _assemble(plan: LeafPlan, layout: ReadLayout, data: list[np.ndarray]) -> Any:
    unique = layout.regions
    fitted = {region: _fit(buffer, region, layout.dtype)
              for region, buffer in zip(unique, data, strict=True)}
    if plan.kind is LeafKind.RANDOM_KEY:
        return _placed_keys(fitted[unique[0]], plan)
    if plan.kind is LeafKind.NUMPY_ARRAY:
        return fitted[unique[0]]
    if plan.kind is LeafKind.SCALAR:
        value = fitted[unique[0]]
        if plan.scalar_type is not None and plan.scalar_type not in (int, float, bool, complex):
            return plan.scalar_type(value)
        item = value.item()
        return plan.scalar_type(item) if plan.scalar_type is not None else item
    shards, adopted = [], set()
    for device, region in layout.placements:
        buffer = fitted[region]
        if region in adopted and device.platform == "cpu":
            # device_put on CPU adopts aligned host buffers; replicas must not share one.
            buffer = np.copy(buffer)
        adopted.add(region)
        shards.append(jax.device_put(buffer, device))
    return jax.make_array_from_single_device_arrays(layout.shape, plan.array_sharding, shards)


def execute_plan(item: Location, record: TreeRecord, plan: RestorePlan,
                 extras: SavedExtras, *, read_ahead_bytes: int | None = None) -> Any:
    """Runs a restore plan: the restored tree."""
    if plan.treedef is None:
        _warn_about_lost_shardings(item, plan.leaves, extras)
    return plan.rebuild(execute_plans(item, record, plan.leaves, extras,
                                      read_ahead_bytes=read_ahead_bytes))


def _only_device(sharding: jax.sharding.SingleDeviceSharding) -> Any:
    devices: Iterable[Any] = sharding.device_set
    return next(iter(devices))


def _warn_about_lost_shardings(item: Location, plans: Sequence[LeafPlan],
                               extras: SavedExtras) -> None:
    """One warning when arrays saved over devices missing here land on one device."""
    lost = 0
    for plan in plans:
        saved = (extras.shardings.get(plan.path.param_name)
                 if plan.kind is LeafKind.JAX_ARRAY else None)
        if saved and isinstance(plan.sharding, jax.sharding.SingleDeviceSharding) and (
                saved.get("sharding_type") != "SingleDeviceSharding"
                or saved.get("device_id") not in (None, _only_device(plan.sharding).id)):
            lost += 1
    if lost:
        logger.warning(
            "%d array(s) in %s were saved on devices this process does not have (it sees %d); "
            "restored without a target, they are placed on one device, %s. To restore onto "
            "shardings of your choice, pass a target whose leaves carry them, e.g. "
            "jax.ShapeDtypeStruct(shape, dtype, sharding=...).", lost, item,
            jax.device_count(), jax.local_devices()[0])
