"""Helpers for the object-store tests: sharded trees, bit-exact checks, raw bucket views."""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorstore as ts
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from servers.store import ObjectStore

MIB = 1024 * 1024


def mesh() -> jax.sharding.Mesh:
    """The 8 virtual CPU devices (tests/conftest.py) as a 4 x 2 mesh."""
    return jax.make_mesh((4, 2), ("data", "model"))


def sharded_tree(seed: int, *, big_mib: int = 0) -> dict[str, Any]:
    """A tree of jax arrays sharded several ways, plus numpy and scalar leaves.

    Values depend on `seed`, so restoring the wrong step cannot pass a bit-exact check.
    `big_mib` adds a float32 array of that many MiB sharded over all 8 devices.
    """
    rng = np.random.default_rng(seed)
    devices = mesh()

    def put(value: np.ndarray, spec: P) -> jax.Array:
        return jax.device_put(value, NamedSharding(devices, spec))

    tree: dict[str, Any] = {
        "params": {
            "dense": put(rng.standard_normal((64, 32)).astype(np.float32), P("data", "model")),
            "bias": put(rng.standard_normal((32,)).astype(np.float32), P("model")),
            "embed": put(rng.standard_normal((16, 8)).astype(jnp.bfloat16), P(None, "model")),
            "replicated": put(rng.integers(-128, 127, (12,), dtype=np.int8), P()),
        },
        "opt": [put(rng.integers(0, 2**32, (8, 4), dtype=np.uint32), P("data"))],
        "host": rng.standard_normal((3, 5)),
        "step": seed,
    }
    if big_mib:
        rows = big_mib * MIB // (4 * 1024)
        tree["big"] = put(rng.standard_normal((rows, 1024), dtype=np.float32), P(("data", "model")))
    return tree


def abstract(tree: dict[str, Any]) -> Any:
    """`tree` with every jax array replaced by a ShapeDtypeStruct of the same sharding."""

    def leaf(value: Any) -> Any:
        if isinstance(value, jax.Array):
            return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=value.sharding)
        return value

    return jax.tree.map(leaf, tree)


def assert_bit_exact(restored: Any, expected: Any) -> None:
    """Same tree structure, leaf types, dtypes, shapes, shardings and bytes."""
    restored_leaves, restored_def = jax.tree_util.tree_flatten_with_path(restored)
    expected_leaves, expected_def = jax.tree_util.tree_flatten_with_path(expected)
    assert restored_def == expected_def, f"tree structure {restored_def} != {expected_def}"
    for (path, got), (_, want) in zip(restored_leaves, expected_leaves, strict=True):
        where = jax.tree_util.keystr(path)
        if isinstance(want, jax.Array):
            assert isinstance(got, jax.Array), f"{where}: expected a jax.Array, got {type(got)}"
            assert got.sharding.is_equivalent_to(want.sharding, want.ndim), where
            for got_shard, want_shard in zip(got.addressable_shards, want.addressable_shards,
                                             strict=True):
                assert got_shard.device == want_shard.device, where
                assert np.asarray(got_shard.data).tobytes() == \
                    np.asarray(want_shard.data).tobytes(), f"{where}: shard bytes differ"
        if isinstance(want, np.ndarray | jax.Array):
            got_array, want_array = np.asarray(got), np.asarray(want)
            assert (got_array.dtype, got_array.shape) == (want_array.dtype, want_array.shape), where
            assert got_array.tobytes() == want_array.tobytes(), f"{where}: bytes differ"
        else:
            assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def raw_kvstore(store: ObjectStore, path: str = "") -> ts.KvStore:
    """The bucket under the test's prefix, opened directly (not through jaxpoint)."""
    return ts.KvStore.open(store.kvstore_spec(path)).result()


def object_names(store: ObjectStore, path: str = "") -> list[str]:
    """Every object name under `path` in the test's prefix, sorted."""
    return sorted(key.decode() for key in raw_kvstore(store, path).list().result())


def delete_object(store: ObjectStore, path: str) -> None:
    """Deletes the one object `path` (not through jaxpoint), as a crash or an operator might."""
    kvstore = raw_kvstore(store)
    assert kvstore.read(path).result().state == "value", f"{store.url(path)} does not exist"
    kvstore.delete_range(ts.KvStore.KeyRange(path, path + "\x00")).result()


def wait_for_object(store: ObjectStore, path: str, *, containing: str,
                    timeout_s: float = 60.0) -> None:
    """Blocks until an object whose name contains `containing` exists below folder `path`."""
    kvstore = ts.KvStore.open(store.kvstore_spec(path)).result()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(containing in key.decode() for key in kvstore.list().result()):
            return
        time.sleep(0.005)
    raise TimeoutError(f"Expected an object containing {containing!r} under "
                       f"{store.url(path)} within {timeout_s} s, found none.")


def request_retries(store: ObjectStore) -> int:
    """How many requests TensorStore's driver for `store` has retried in this process."""
    driver = store.kvstore_spec()["driver"]
    metrics = ts.experimental_collect_matching_metrics(f"/tensorstore/kvstore/{driver}/retries",
                                                       include_zero_metrics=True)
    return sum(value.get("value", 0) for metric in metrics for value in metric["values"])
