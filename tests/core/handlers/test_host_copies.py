"""Which shards a save writes, and what staging hands the write (CPU: the shards as they are)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxpoint.core.handlers.host_copies import (
    PINNED_HOST,
    is_pinned,
    owned_shards,
    start_host_copies,
)


def _mesh():
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("a", "b"))


def test_replicated_shards_are_written_once():
    array = jax.device_put(jnp.arange(32.0).reshape(8, 4), NamedSharding(_mesh(), PartitionSpec("a")))
    shards = owned_shards(array)
    # Split 4 ways over "a", replicated over "b": one shard of each row block.
    assert len(shards) == 4
    rows = sorted(index[0].start for index, _ in shards)
    assert rows == [0, 2, 4, 6]
    for index, data in shards:
        assert np.array_equal(np.asarray(data), np.asarray(array)[index])


def test_random_keys_are_staged_as_their_key_data():
    keys = jax.random.split(jax.random.key(3), 4)
    ((index, data),) = owned_shards(keys)
    assert np.array_equal(np.asarray(data), np.asarray(jax.random.key_data(keys)))


def test_cpu_shards_are_handed_over_unpinned():
    array = jnp.arange(10)
    (shards,) = start_host_copies([(array, True)])
    ((_, data),) = shards
    assert not is_pinned(data)
    assert np.array_equal(np.asarray(data), np.arange(10))


def test_is_pinned_recognises_pinned_host_arrays():
    device = jax.devices()[0]
    pinned = jax.device_put(jnp.ones(3), jax.sharding.SingleDeviceSharding(device, memory_kind=PINNED_HOST))
    assert is_pinned(pinned)
    assert not is_pinned(jnp.ones(3)) and not is_pinned(np.ones(3))
