"""`metadata(path).item_metadata` has Orbax's TreeMetadata shape, and still indexes like a dict."""

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core.errors import InvalidArgumentError

P = jax.sharding.PartitionSpec


def test_tree_metadata_of_a_sharded_save(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    sharding = jax.sharding.NamedSharding(mesh, P("data", "model"))
    state = {"params": {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4), sharding)},
             "step": 3, "name": "mlp"}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "c", args=ocp.args.StandardSave(state, custom_metadata={"git": "abc"}))
        checkpointer.wait_until_finished()
        meta = checkpointer.metadata(tmp_path / "c").item_metadata
    assert isinstance(meta, ocp.metadata.TreeMetadata) and meta.custom_metadata == {"git": "abc"}
    w = meta["params"]["w"]
    assert w is meta.tree["params"]["w"] and sorted(meta) == ["name", "params", "step"]
    assert isinstance(w, ocp.metadata.ArrayMetadata)
    assert w.shape == (8, 4) and w.dtype == np.float32
    assert isinstance(w.sharding, ocp.metadata.ShardingMetadata)
    assert w.sharding.to_jax_sharding() == sharding
    assert w.storage.write_shape == (2, 2) and w.storage.chunk_shape is not None
    assert isinstance(meta["step"], ocp.metadata.ScalarMetadata)
    assert isinstance(meta["name"], ocp.metadata.StringMetadata)
    # Orbax's idiom: map the metadata to an abstract target and restore onto it.
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=m.sharding.to_jax_sharding()),
        {"params": meta["params"]})
    restored = ocp.PyTreeCheckpointer().restore(
        tmp_path / "c", args=ocp.args.PyTreeRestore(abstract, partial_restore=True))
    assert restored["params"]["w"].sharding == sharding
    assert np.array_equal(restored["params"]["w"], state["params"]["w"])
    shapes = jax.tree.map(lambda m: getattr(m, "shape", None), meta)
    assert isinstance(shapes, ocp.metadata.TreeMetadata) and shapes["params"]["w"] == (8, 4)


def test_single_device_sharding_metadata_names_a_missing_device():
    found = ocp.metadata.ShardingMetadata.from_description(
        {"sharding_type": "SingleDeviceSharding", "device_str": "TPU_99(x)", "device_id": 99})
    assert isinstance(found, ocp.metadata.SingleDeviceShardingMetadata)
    with pytest.raises(InvalidArgumentError, match=r"Expected device 'TPU_99\(x\)'.*To fix"):
        found.to_jax_sharding()
