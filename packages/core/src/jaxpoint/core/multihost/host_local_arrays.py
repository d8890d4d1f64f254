"""Host-local arrays (e.g. produced by `pmap`) turned into global `jax.Array`s."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def fully_replicated_host_local_array_to_global_array(arr: jax.Array) -> jax.Array:
    """A global array replicated over all devices, from a fully replicated host-local one.

    A pmap output carries a leading device axis (each device holding one copy); that axis
    is dropped. Its shards are ordered by device id, since pmap scrambles device order.
    """
    global_shape = arr.addressable_data(0).shape
    mesh = Mesh(np.array(jax.devices()), axis_names=("x",))
    spec = PartitionSpec(None) if global_shape else PartitionSpec()
    buffers = sorted((shard.data for shard in arr.addressable_shards),
                     key=lambda data: next(iter(data.devices())).id)
    if global_shape != arr.shape:
        buffers = [buffer[0] for buffer in buffers]
        global_shape = global_shape[1:]
    return jax.make_array_from_single_device_arrays(
        global_shape, NamedSharding(mesh, spec), buffers)
