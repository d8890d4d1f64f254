"""Copying arrays across the replicas of a mesh with one exact, memory-bounded sum.

A mesh's replica axis holds full copies of the state. To give every replica the data that
only some devices hold, each device contributes either its shard or zeros, and a jitted
`psum` over the replica axis adds them up, on the arrays' bits so that the result is
exact for every dtype (-0.0 and NaN payloads survive). Leaves are turned into their bits
while they are stacked (one copy, which the stacking makes anyway) and summed as unsigned
integers, so the program converts only its result: converting both ways inside the program
cost about 30% more CPU time than a plain float sum (docs/performance.md). Exactly one replica may contribute
per position of the other axes (a "slot"), and which one may differ from slot to slot: the
single-replica restore uses one primary replica everywhere; the emergency local tier picks,
per slot, a replica whose host still holds the step.

Collective: every process of the mesh calls `sum_over_replicas`, in the same order, with
the same leaves. Leaves go in batches of at most `limit_bytes` per device; a batch's
inputs are freed before the next one starts, so at most one batch exists twice.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

logger = logging.getLogger(__name__)

_UNSIGNED_OF_BITS = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}


def broadcast_batches(bytes_per_leaf: Sequence[int], limit_bytes: int) -> list[range]:
    """Splits leaves, in order, into runs of at most `limit_bytes`; a larger leaf runs alone.

    >>> broadcast_batches([3, 3, 5, 1, 9], limit_bytes=6)
    [range(0, 2), range(2, 4), range(4, 5)]
    """
    batches, start, held = [], 0, 0
    for index, size in enumerate(bytes_per_leaf):
        if index > start and held + size > limit_bytes:
            batches.append(range(start, index))
            start, held = index, 0
        held += size
    if start < len(bytes_per_leaf):
        batches.append(range(start, len(bytes_per_leaf)))
    return batches


def sum_over_replicas(sources: Sequence[jax.Array | None],
                      abstract: Sequence[jax.ShapeDtypeStruct], *, mesh: jax.sharding.Mesh,
                      axis_name: str, contributes: Callable[[jax.Device], bool],
                      limit_bytes: int, label: str = "replica broadcast",
                      log: logging.Logger = logger) -> list[jax.Array]:
    """Collective: every process of `mesh` calls this, in the same order.

    Returns, for each leaf, an array with `abstract[i]`'s shape, dtype and `NamedSharding`
    (over `mesh`, its spec not using `axis_name`) whose every shard is the one contributed
    for its slot. A device contributes its shard of `sources[i]` when `contributes(device)`
    is True and that array has a shard there; other devices add zeros. `sources[i]` may be
    None on processes that contribute nothing; it is deleted once its batch is summed.
    `label` names the batches in the debug lines `log` (the caller's logger) writes.
    """
    sizes = [math.prod(a.sharding.shard_shape(a.shape)) * jnp.dtype(a.dtype).itemsize
             for a in abstract]
    batches = broadcast_batches(sizes, limit_bytes)
    results: list[jax.Array] = []
    for number, batch in enumerate(batches, start=1):
        stacked = tuple(_stacked(sources[i], abstract[i], mesh, axis_name, contributes)
                        for i in batch)
        for i in batch:
            source = sources[i]
            if source is not None:
                source.delete()
        merge = _merge_program(mesh, axis_name, tuple(abstract[i].sharding.spec for i in batch),
                               tuple(jnp.dtype(abstract[i].dtype) for i in batch))
        merged = merge(stacked)
        jax.block_until_ready(merged)
        for array in stacked:
            array.delete()
        results.extend(merged)
        log.debug("%s batch %d/%d: %d leaves, %d bytes per device", label, number,
                     len(batches), len(batch), sum(sizes[i] for i in batch))
    return results


def _stacked(source: jax.Array | None, abstract: jax.ShapeDtypeStruct, mesh: jax.sharding.Mesh,
             axis_name: str, contributes: Callable[[jax.Device], bool]) -> jax.Array:
    """The leaf with a leading replica dimension: contributed shards, zeros elsewhere.

    In `_bits_dtype(dtype)` when the leaf has one, so that the sum needs no conversion in.
    """
    bits = _bits_dtype(abstract.dtype)
    dtype = abstract.dtype if bits is None else bits
    spec = jax.sharding.PartitionSpec(axis_name, *abstract.sharding.spec)
    sharding = jax.sharding.NamedSharding(mesh, spec)
    shape = (mesh.shape[axis_name], *abstract.shape)
    on_device = {} if source is None else {
        s.device: s.data for s in source.addressable_shards if contributes(s.device)}
    buffers = []
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        data = on_device.get(device)
        if data is not None:
            buffers.append(_stacked_bits(data, bits))
        else:
            local = tuple(len(range(*s.indices(n)))
                          for s, n in zip(index or (), shape, strict=True))
            buffers.append(jnp.zeros(local, dtype, device=device))
    return jax.make_array_from_single_device_arrays(shape, sharding, buffers)


def _bits_dtype(dtype: Any) -> Any:
    """The unsigned type a leaf is summed in, or None where it is summed as itself."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.bool_ or jnp.issubdtype(dtype, jnp.complexfloating):
        return None
    return _UNSIGNED_OF_BITS.get(jax.dtypes.itemsize_bits(dtype))  # None: sub-byte types


@functools.partial(jax.jit, static_argnums=1)
def _stacked_bits(shard: jax.Array, bits: Any) -> jax.Array:
    """One shard with a leading replica dimension, in `bits` when not None: one copy."""
    if bits is not None and shard.dtype != bits:
        shard = jax.lax.bitcast_convert_type(shard, bits)
    return shard[None]


@functools.lru_cache(maxsize=64)
def _merge_program(mesh: jax.sharding.Mesh, axis_name: str,
                   specs: tuple[jax.sharding.PartitionSpec, ...], dtypes: tuple[Any, ...]) -> Any:
    """The jitted psum over the replica axis for a batch of leaves with `specs`, `dtypes`.

    Cached so that batches and restores of the same layout reuse one compiled program.
    """
    in_specs = tuple(jax.sharding.PartitionSpec(axis_name, *spec) for spec in specs)
    body = functools.partial(_sum_stacked, axis_name=axis_name, dtypes=dtypes)
    return jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(in_specs,), out_specs=specs))


def _sum_stacked(stacked: tuple[jax.Array, ...], *, axis_name: str,
                 dtypes: tuple[Any, ...]) -> tuple[jax.Array, ...]:
    return tuple(_exact_psum(x[0], axis_name) if x.dtype == dtype
                 else jax.lax.bitcast_convert_type(jax.lax.psum(x[0], axis_name), dtype)
                 for x, dtype in zip(stacked, dtypes, strict=True))


def _exact_psum(x: jax.Array, axis_name: str) -> jax.Array:
    """Sums over the replicas, all but one of which hold zeros, keeping the bits (-0.0, NaNs).

    For the leaves `_stacked` leaves in their own dtype (bool, complex, sub-byte types).
    """
    if x.dtype == jnp.bool_:
        return jax.lax.psum(x.astype(jnp.uint8), axis_name).astype(jnp.bool_)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        return jax.lax.complex(_exact_psum(jnp.real(x), axis_name),
                               _exact_psum(jnp.imag(x), axis_name))
    unsigned = _UNSIGNED_OF_BITS.get(jax.dtypes.itemsize_bits(x.dtype))
    if unsigned is None:  # sub-byte types: an ordinary sum
        return jax.lax.psum(x, axis_name)
    bits = jax.lax.psum(jax.lax.bitcast_convert_type(x, unsigned), axis_name)
    return jax.lax.bitcast_convert_type(bits, x.dtype)
