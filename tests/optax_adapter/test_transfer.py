"""The ways out of a structure change: a fresh state, or the old moments where they fit."""

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import optax
from jaxpoint.optax_adapter import reinitialize_opt_state, transfer_opt_state

PARAMS = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones((3,))}


def _trained(tx):
    state = tx.init(PARAMS)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), PARAMS)
    _, state = tx.update(grads, state, PARAMS)
    return state


def test_adam_moments_survive_a_new_clipping_stage(tmp_path):
    old = _trained(optax.adam(1e-3))
    ocp.save(tmp_path / "ckpt", {"opt_state": old})
    saved = ocp.restore(tmp_path / "ckpt")["opt_state"]
    new_tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))

    moved = transfer_opt_state(saved, new_tx.init(PARAMS))

    adam = moved[1][0]
    assert isinstance(adam, optax.ScaleByAdamState)
    np.testing.assert_array_equal(adam.mu["w"], old[0].mu["w"])
    np.testing.assert_array_equal(adam.nu["b"], old[0].nu["b"])
    assert int(adam.count) == 1


def test_leaves_without_a_twin_keep_their_fresh_value(tmp_path):
    ocp.save(tmp_path / "ckpt", {"opt_state": _trained(optax.adam(1e-3))})
    saved = ocp.restore(tmp_path / "ckpt")["opt_state"]

    moved = transfer_opt_state(saved, optax.sgd(0.1, momentum=0.9).init(PARAMS))

    assert isinstance(moved[0], optax.TraceState)
    np.testing.assert_array_equal(moved[0].trace["w"], np.zeros((2, 3)))


def test_reinitialize_follows_the_params_sharding():
    mesh = jax.make_mesh((2,), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    params = {"w": jax.device_put(jnp.ones((4, 2)), sharding)}

    state = reinitialize_opt_state(optax.adam(1e-3), params)

    assert isinstance(state[0], optax.ScaleByAdamState)
    assert state[0].mu["w"].sharding == sharding
