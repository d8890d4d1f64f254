"""Bulk reads and writes: in-order hand-over of read buffers, and what a write accepts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpoint.core.storage import (
    ArrayFormat,
    ArrayRead,
    ArrayWrite,
    Location,
    merge_process_databases,
    open_arrays,
    read_arrays,
    write_arrays,
)

FORMAT = ArrayFormat()


def _write(item: Location, arrays: dict[str, np.ndarray]) -> None:
    writes = [ArrayWrite(param_name=name, shape=a.shape, dtype=a.dtype, chunk_shape=a.shape,
                         shards=[(tuple(slice(0, d) for d in a.shape), a)])
              for name, a in arrays.items()]
    write_arrays(item, writes, fmt=FORMAT, process_index=0)
    merge_process_databases(item, [0])


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    # Large arrays (read through TensorStore) between small ones (decoded in one batch).
    sizes = [10, 300_000, 3, 200_000, 5, 400_000, 7]
    return {f"a{i}": rng.standard_normal(size).astype(np.float32) for i, size in enumerate(sizes)}


@pytest.mark.parametrize("read_ahead", [1, None, 1 << 30])
def test_consume_sees_every_request_once_in_order(tmp_path, read_ahead):
    item = Location.parse(tmp_path / "item")
    arrays = _arrays()
    _write(item, arrays)
    names = list(arrays)
    stores = open_arrays(item, names, use_ocdbt=True, use_zarr3=True)
    # Three regions per request: a request must not be handed over between its regions.
    thirds = {n: [(slice(k * a.size // 3, (k + 1) * a.size // 3),) for k in range(3)]
              for n, a in arrays.items()}
    reads = [ArrayRead(param_name=n, regions=thirds[n]) for n in names]
    seen = []

    def consume(index, buffers):
        seen.append(index)
        return ("consumed", names[index], np.concatenate(buffers))

    # One request in flight at a time forces waits while later requests are being issued.
    results = read_arrays(item, stores, reads, consume=consume, read_ahead_bytes=read_ahead,
                          min_in_flight=1)
    assert seen == list(range(len(names)))
    for name, (tag, got_name, data) in zip(names, results, strict=True):
        assert (tag, got_name) == ("consumed", name)
        assert np.array_equal(data, arrays[name])


def test_without_consume_every_buffer_is_returned(tmp_path):
    item = Location.parse(tmp_path / "item")
    arrays = _arrays()
    _write(item, arrays)
    names = list(arrays)
    stores = open_arrays(item, names, use_ocdbt=True, use_zarr3=True)
    reads = [ArrayRead(param_name=n, regions=[(slice(1, 3),)]) for n in names]
    results = read_arrays(item, stores, reads)
    for name, buffers in zip(names, results, strict=True):
        assert np.array_equal(buffers[0], arrays[name][1:3])


def test_a_write_accepts_a_pinned_host_array(tmp_path):
    # What a save on an accelerator hands the background write: a pinned host jax.Array
    # whose bytes np.asarray yields once its device-to-host copy has finished.
    device = jax.devices()[0]
    # The pinned jaxlib CPU build has pinned host memory, so this runs on CPU too.
    assert "pinned_host" in {m.kind for m in device.addressable_memories()}
    source = jnp.arange(50_000, dtype=jnp.float32)
    pinned = jax.device_put(source, jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host"))
    item = Location.parse(tmp_path / "item")
    write_arrays(item, [ArrayWrite(param_name="p", shape=(50_000,), dtype=np.dtype(np.float32),
                                   chunk_shape=(8192,), shards=[((slice(0, 50_000),), pinned)])],
                 fmt=FORMAT, process_index=0)
    merge_process_databases(item, [0])
    (store,) = open_arrays(item, ["p"], use_ocdbt=True, use_zarr3=True)
    (buffers,) = read_arrays(item, [store], [ArrayRead(param_name="p", regions=[(slice(0, 50_000),)])])
    assert np.array_equal(buffers[0], np.arange(50_000, dtype=np.float32))
