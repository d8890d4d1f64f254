import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core.errors import InvalidArgumentError, UnsupportedLeafError


def test_json_item(tmp_path):
    ckptr = ocp.Checkpointer(ocp.JsonCheckpointHandler())
    ckptr.save(tmp_path / "j", args=ocp.args.JsonSave({"lr": 0.1, "names": ["a"]}))
    assert (tmp_path / "j" / "metadata").exists()
    assert ckptr.restore(tmp_path / "j") == {"lr": 0.1, "names": ["a"]}


def test_json_rejects_unserialisable_values(tmp_path):
    ckptr = ocp.Checkpointer(ocp.JsonCheckpointHandler())
    with pytest.raises(InvalidArgumentError, match="JSON-serialisable"):
        ckptr.save(tmp_path / "j", args=ocp.args.JsonSave({"a": object()}))


def test_array_item(tmp_path):
    ckptr = ocp.Checkpointer(ocp.ArrayCheckpointHandler())
    ckptr.save(tmp_path / "a", args=ocp.args.ArraySave(jnp.arange(9.0).reshape(3, 3)))
    restored = ckptr.restore(tmp_path / "a")
    assert restored.shape == (3, 3) and float(restored[2, 2]) == 8.0


@pytest.mark.parametrize("key", [jax.random.key(1), jax.random.PRNGKey(2),
                                 jax.random.key(3, impl="rbg")])
def test_jax_random_keys(tmp_path, key):
    ckptr = ocp.Checkpointer(ocp.JaxRandomKeyCheckpointHandler())
    ckptr.save(tmp_path / "k", args=ocp.args.JaxRandomKeySave(key))
    restored = ckptr.restore(tmp_path / "k", args=ocp.args.JaxRandomKeyRestore())
    assert restored.dtype == key.dtype
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        assert np.array_equal(jax.random.key_data(restored), jax.random.key_data(key))
    else:
        assert np.array_equal(restored, key)


def test_jax_random_key_rejects_other_values(tmp_path):
    ckptr = ocp.Checkpointer(ocp.JaxRandomKeyCheckpointHandler())
    with pytest.raises(UnsupportedLeafError, match="Expected a jax.Array key"):
        ckptr.save(tmp_path / "k", args=ocp.args.JaxRandomKeySave(np.zeros(2)))


@pytest.mark.parametrize("state", [np.random.RandomState(5).get_state(),
                                   np.random.default_rng(5).bit_generator.state])
def test_numpy_random_states(tmp_path, state):
    ckptr = ocp.Checkpointer(ocp.NumpyRandomKeyCheckpointHandler())
    ckptr.save(tmp_path / "n", args=ocp.args.NumpyRandomKeySave(state))
    restored = ckptr.restore(tmp_path / "n", args=ocp.args.NumpyRandomKeyRestore())
    if isinstance(state, tuple):
        generator = np.random.RandomState()
        generator.set_state(restored)
        expected = np.random.RandomState()
        expected.set_state(state)
        assert np.array_equal(generator.random(5), expected.random(5))
    else:
        generator = np.random.default_rng()
        generator.bit_generator.state = restored
        assert restored == state


def test_proto_item(tmp_path):
    from google.protobuf import struct_pb2

    message = struct_pb2.Struct()
    message.update({"a": 1.0, "b": "x"})
    ckptr = ocp.Checkpointer(ocp.ProtoCheckpointHandler())
    ckptr.save(tmp_path / "p", args=ocp.args.ProtoSave(message))
    assert ckptr.restore(tmp_path / "p", args=ocp.args.ProtoRestore(struct_pb2.Struct)) == message
    with pytest.raises(InvalidArgumentError, match="needs its message class"):
        ckptr.restore(tmp_path / "p")
