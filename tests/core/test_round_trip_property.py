"""Property: random pytrees of sharded arrays round-trip bit-exactly."""

import hashlib

import jax
import jaxpoint.core as ocp
import ml_dtypes
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DTYPES = [np.float32, ml_dtypes.bfloat16, np.int8, np.bool_, np.uint32, np.float16, np.int64]
P = jax.sharding.PartitionSpec


def _mesh(shape):
    return jax.sharding.Mesh(np.array(jax.devices()).reshape(shape), ("a", "b"))


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 4, 8]), min_size=ndim, max_size=ndim)))
    raw = draw(st.binary(min_size=int(np.prod(shape)) * dtype.itemsize,
                         max_size=int(np.prod(shape)) * dtype.itemsize))
    value = np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape) if shape else (
        np.frombuffer(raw, dtype=dtype).reshape(()))
    if dtype == np.bool_:
        value = value.view(np.uint8) % 2 == 1
    placement = draw(st.sampled_from(["numpy", "single", "replicated", "sharded"]))
    if placement == "numpy":
        return value
    if placement == "single":
        return jax.device_put(value, jax.devices()[draw(st.integers(0, 7))])
    mesh = _mesh(draw(st.sampled_from([(8, 1), (4, 2), (2, 4)])))
    spec = P()
    if placement == "sharded" and ndim:
        axis = draw(st.integers(0, ndim - 1))
        divisible = [name for name, size in mesh.shape.items() if shape[axis] % size == 0]
        if divisible:
            spec = P(*([None] * axis + [draw(st.sampled_from(divisible))]))
    return jax.device_put(value, jax.sharding.NamedSharding(mesh, spec))


trees = st.recursive(
    arrays(),
    lambda children: st.one_of(
        st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), children, min_size=1, max_size=3),
        st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=6,
)


def _digest(value):
    array = np.asarray(value)
    if array.dtype == ml_dtypes.bfloat16:
        array = array.view(np.uint16)
    return array.dtype, array.shape, hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(tree=trees)
def test_random_trees_round_trip_bit_exactly(tmp_path_factory, tree):
    path = tmp_path_factory.mktemp("prop") / "ckpt"
    ocp.save(path, tree)
    restored = ocp.restore(path, tree)
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    for original, back in zip(jax.tree.leaves(tree), jax.tree.leaves(restored), strict=True):
        assert _digest(original) == _digest(back)
        assert type(original) is type(back) or (isinstance(original, jax.Array) and isinstance(back, jax.Array))
        if isinstance(original, jax.Array):
            assert back.sharding.is_equivalent_to(original.sharding, original.ndim)
