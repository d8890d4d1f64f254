import collections
import dataclasses

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core.errors import TreeMismatchError, UnsupportedLeafError

P = jax.sharding.PartitionSpec
Pair = collections.namedtuple("Pair", "first second")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class State:
    params: dict
    step: jax.Array


def _mesh(shape=(4, 2)):
    return jax.sharding.Mesh(np.array(jax.devices()).reshape(shape), ("data", "model"))


def test_every_leaf_kind_round_trips(tmp_path):
    tree = {
        "jax": jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3),
        "np": np.arange(4, dtype=np.uint32),
        "int": 3, "float": 2.5, "bool": True, "np_scalar": np.float32(1.5),
        "string": "hello", "none": None, "empty_dict": {}, "empty_list": [], "empty_tuple": (),
        "typed_key": jax.random.key(7), "raw_key": jax.random.PRNGKey(3),
        "zero_size": jnp.zeros((0, 5)), "scalar_array": jnp.array(4.0),
    }
    ocp.save(tmp_path / "c", tree)
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(tree))
    for key in ("jax", "np", "raw_key", "zero_size", "scalar_array"):
        assert np.asarray(restored[key]).dtype == np.asarray(tree[key]).dtype
        assert np.array_equal(restored[key], tree[key]), key
    assert restored["int"] == 3 and type(restored["int"]) is int
    assert restored["float"] == 2.5 and restored["bool"] is True
    assert restored["np_scalar"] == np.float32(1.5) and isinstance(restored["np_scalar"], np.float32)
    assert restored["string"] == "hello" and restored["none"] is None
    assert restored["empty_dict"] == {} and restored["empty_list"] == [] and restored["empty_tuple"] == ()
    assert jax.dtypes.issubdtype(restored["typed_key"].dtype, jax.dtypes.prng_key)
    assert np.array_equal(jax.random.key_data(restored["typed_key"]), jax.random.key_data(tree["typed_key"]))


def test_containers_restore_as_their_own_types(tmp_path):
    tree = {"pair": Pair(jnp.ones(2), [jnp.zeros(1)]), "state": State({"w": jnp.ones(3)}, jnp.array(5))}
    ocp.save(tmp_path / "c", tree)
    restored = ocp.restore(tmp_path / "c", tree)
    assert isinstance(restored["pair"], Pair) and isinstance(restored["state"], State)
    assert int(restored["state"].step) == 5


def test_restore_onto_another_sharding_reads_only_each_shard(tmp_path):
    mesh = _mesh()
    value = jnp.arange(64.0).reshape(8, 8)
    saved = jax.device_put(value, jax.sharding.NamedSharding(mesh, P("data", "model")))
    ocp.save(tmp_path / "c", {"w": saved})
    for target_sharding in (
        jax.sharding.NamedSharding(_mesh((2, 4)), P("model", None)),
        jax.sharding.NamedSharding(mesh, P()),
        jax.sharding.SingleDeviceSharding(jax.devices()[3]),
    ):
        target = {"w": jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=target_sharding)}
        restored = ocp.restore(tmp_path / "c", target)["w"]
        assert restored.sharding == target_sharding
        assert np.array_equal(restored, value)


def test_restore_args_with_mesh_axes(tmp_path):
    ocp.save(tmp_path / "c", {"w": jnp.arange(16.0).reshape(4, 4)})
    args = ocp.args.PyTreeRestore(restore_args={"w": ocp.ArrayRestoreArgs(mesh=_mesh(), mesh_axes=P("data"))})
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=args)["w"]
    assert restored.sharding.spec == P("data") and float(restored.sum()) == 120.0


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.dtype("float16"), "int8"])
def test_dtype_given_as_jnp_or_numpy_both_work(tmp_path, dtype):
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(tmp_path / "c", args=ocp.args.PyTreeSave({"w": jnp.ones(4)}, save_args={"w": ocp.SaveArgs(dtype=dtype)}))
    assert ckptr.metadata(tmp_path / "c").item_metadata["w"].dtype == np.dtype(dtype)
    restored = ckptr.restore(tmp_path / "c", args=ocp.args.PyTreeRestore(
        restore_args={"w": ocp.RestoreArgs(dtype=jnp.float32)}))
    assert restored["w"].dtype == np.float32


def test_partial_restore_of_a_subset(tmp_path):
    ocp.save(tmp_path / "c", {"a": jnp.ones(2), "b": {"c": jnp.zeros(3), "d": 4}})
    restored = ocp.PyTreeCheckpointer().restore(
        tmp_path / "c", args=ocp.args.PyTreeRestore({"b": {"c": jnp.zeros(3)}}, partial_restore=True))
    assert list(restored) == ["b"] and restored["b"]["c"].shape == (3,)


def test_missing_and_extra_keys_are_named(tmp_path):
    ocp.save(tmp_path / "c", {"a": jnp.ones(2), "b": jnp.ones(2)})
    with pytest.raises(TreeMismatchError, match=r"target has keys the checkpoint lacks: \['z'\]"):
        ocp.restore(tmp_path / "c", {"a": jnp.ones(2), "b": jnp.ones(2), "z": jnp.ones(1)})
    with pytest.raises(TreeMismatchError, match=r"checkpoint has keys the target lacks: \['b'\]"):
        ocp.restore(tmp_path / "c", {"a": jnp.ones(2)})


def test_shape_mismatch_needs_strict_false_and_dtype_casts(tmp_path):
    ocp.save(tmp_path / "c", {"w": jnp.arange(4.0)})
    with pytest.raises(TreeMismatchError, match=r"\['w'\].*shape \(4,\) was saved, the target asks for \(6,\)"):
        ocp.restore(tmp_path / "c", {"w": jax.ShapeDtypeStruct((6,), jnp.float32)})
    cast = ocp.restore(tmp_path / "c", {"w": jax.ShapeDtypeStruct((4,), jnp.int32)})
    assert cast["w"].dtype == jnp.int32 and cast["w"].tolist() == [0, 1, 2, 3]
    padded = ocp.restore(tmp_path / "c", {"w": jax.ShapeDtypeStruct((6,), jnp.float32)}, strict=False)
    assert padded["w"].tolist() == [0, 1, 2, 3, 0, 0]
    truncated = ocp.restore(tmp_path / "c", {"w": jax.ShapeDtypeStruct((2,), jnp.int32)}, strict=False)
    assert truncated["w"].tolist() == [0, 1] and truncated["w"].dtype == jnp.int32


def test_int64_step_restores_onto_an_int32_abstract_target(tmp_path):
    # A Flax TrainState's `step` starts as a Python int, saved as int64; jax.eval_shape of
    # the state's init gives int32.
    ocp.save(tmp_path / "c", {"step": np.int64(7), "w": np.arange(3, dtype=np.int64), "py": 0})
    assert ocp.PyTreeCheckpointer().metadata(tmp_path / "c").item_metadata["py"].dtype == np.int64
    target = {"step": jax.ShapeDtypeStruct((), jnp.int32), "w": np.zeros(3, np.int32),
              "py": jax.ShapeDtypeStruct((), jnp.int32)}
    restored = ocp.StandardCheckpointer().restore(tmp_path / "c", target)
    assert restored["step"].dtype == jnp.int32 and int(restored["step"]) == 7
    assert restored["w"].dtype == np.int32 and restored["w"].tolist() == [0, 1, 2]
    assert restored["py"].dtype == jnp.int32 and int(restored["py"]) == 0


def test_unsupported_leaf_names_path_and_type(tmp_path):
    with pytest.raises(UnsupportedLeafError, match=r"\['opt'\]\['fn'\].*builtins.function"):
        ocp.save(tmp_path / "c", {"opt": {"fn": lambda x: x}})
    assert not (tmp_path / "c").exists()


def test_zstd_compression_is_a_handler_option(tmp_path):
    ckptr = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(compression="zstd"))
    ckptr.save(tmp_path / "c", args=ocp.args.PyTreeSave({"w": jnp.zeros(100_000)}))
    assert np.array_equal(ocp.restore(tmp_path / "c")["w"], np.zeros(100_000, np.float32))
    size = sum(f.stat().st_size for f in (tmp_path / "c").rglob("*") if f.is_file())
    assert size < 100_000  # 400 kB of zeros compress far below their raw size


def test_chunk_byte_size_splits_chunks(tmp_path):
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(tmp_path / "c", args=ocp.args.PyTreeSave(
        {"w": jnp.ones((64, 64))}, save_args={"w": ocp.SaveArgs(chunk_byte_size=4096)}))
    meta = ckptr.metadata(tmp_path / "c").item_metadata["w"]
    assert np.prod(meta.chunk_shape) * 4 <= 4096
    assert float(ocp.restore(tmp_path / "c")["w"].sum()) == 4096.0
