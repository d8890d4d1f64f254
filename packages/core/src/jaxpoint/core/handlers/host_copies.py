"""Device-to-host copies of the shards a save writes, all started before any is waited on.

On an accelerator with pinned host memory each copy is a DMA into a pinned array, which
`jax.device_put` starts and returns at once: `save()` gives control back while the copies
run, and the background write waits for them when it converts them with `np.asarray`.
Donating or deleting the source right after is safe: the runtime orders any reuse of a
device buffer after the copies that read it. Elsewhere the copies go to pageable memory
with `copy_to_host_async`, and are waited on while the save is staged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
from jaxpoint.core.errors import InvalidArgumentError

PINNED_HOST = "pinned_host"

# (index in the global array, shard data): a host array, a pinned array, or a device array.
HostShard = tuple[Any, Any]


def owned_shards(leaf: jax.Array, *, every_replica: bool = False) -> list[HostShard]:
    """The shards of `leaf` this process writes: its own, once per replica group.

    `every_replica=True`: every distinct index among this process's shards, whichever
    replica holds it (a per-process local checkpoint must hold all of them).
    """
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    if not every_replica:
        return [(shard.index, shard.data) for shard in leaf.addressable_shards
                if shard.replica_id == 0]
    by_index: dict[tuple[tuple[Any, Any, Any], ...], HostShard] = {}
    for shard in leaf.addressable_shards:
        key = tuple((s.start, s.stop, s.step) for s in shard.index)
        by_index.setdefault(key, (shard.index, shard.data))
    return list(by_index.values())


def start_host_copies(leaves: Sequence[tuple[jax.Array, bool]], *,
                      pinned: bool | None = None,
                      every_replica: bool = False) -> list[list[HostShard]]:
    """For each `(leaf, may_pin)`, its owned shards with their device-to-host copies started.

    `may_pin=False` keeps a leaf's shards in pageable memory (a host-side dtype cast
    follows). `pinned=None` pins where the device has pinned host memory and returns
    shards already on the CPU as they are; `pinned=False` never pins; `pinned=True` pins
    every shard that may be pinned, CPU shards included (a copy), and raises where a
    device has no pinned host memory. `every_replica`: see `owned_shards`.
    """
    per_leaf = [owned_shards(leaf, every_replica=every_replica) for leaf, _ in leaves]
    to_pin: list[tuple[int, int]] = []
    for i, ((_, may_pin), shards) in enumerate(zip(leaves, per_leaf, strict=True)):
        for j, (_, data) in enumerate(shards):
            device = _device_of(data)
            if device.platform == "cpu" and not (pinned and may_pin):
                continue
            if pinned and may_pin and not _has_pinned_host(device):
                raise InvalidArgumentError(
                    f"Expected pinned host memory on {device} for "
                    "enable_pinned_host_transfer=True, found none. To fix, leave "
                    "enable_pinned_host_transfer=None (pin where available) or set it False."
                )
            if may_pin and pinned is not False and _has_pinned_host(device):
                to_pin.append((i, j))
            else:
                data.copy_to_host_async()
    if to_pin:
        sources = [per_leaf[i][j][1] for i, j in to_pin]
        targets = [jax.sharding.SingleDeviceSharding(_device_of(data), memory_kind=PINNED_HOST)
                   for data in sources]
        for (i, j), pinned in zip(to_pin, jax.device_put(sources, targets), strict=True):
            per_leaf[i][j] = (per_leaf[i][j][0], pinned)
    return per_leaf


def is_pinned(data: Any) -> bool:
    """Whether `data` is a pinned host copy that `start_host_copies` began."""
    return isinstance(data, jax.Array) and data.sharding.memory_kind == PINNED_HOST


def _device_of(data: jax.Array) -> jax.Device:
    return next(iter(data.devices()))


@functools.cache
def _has_pinned_host(device: jax.Device) -> bool:
    try:
        return any(memory.kind == PINNED_HOST for memory in device.addressable_memories())
    except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
        return False
