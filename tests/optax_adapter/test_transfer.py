"""The ways out of a structure change: a fresh state, or the old moments where they fit."""

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import optax
import pytest
from flax.training import train_state
from jaxpoint.optax_adapter import (
    reinitialize_opt_state,
    restore_args_without_opt_state,
    transfer_opt_state,
)

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


def test_params_only_then_a_fresh_optimizer(tmp_path):
    old = _trained(optax.adamw(1e-3))
    ocp.save(tmp_path / "ckpt", {"params": PARAMS, "opt_state": old, "step": 7})
    new_tx = optax.sgd(0.1, momentum=0.9)
    target = {"params": PARAMS, "opt_state": new_tx.init(PARAMS), "step": 0}

    with ocp.PyTreeCheckpointer() as checkpointer:
        kept = checkpointer.restore(tmp_path / "ckpt",
                                    args=restore_args_without_opt_state(target))
    state = {**kept, "opt_state": reinitialize_opt_state(new_tx, kept["params"])}

    assert sorted(kept) == ["params", "step"] and kept["step"] == 7
    np.testing.assert_array_equal(state["params"]["w"], PARAMS["w"])
    assert isinstance(state["opt_state"][0], optax.TraceState)


def test_a_train_state_target_leaves_out_its_static_fields(tmp_path):
    state = train_state.TrainState.create(apply_fn=None, params=PARAMS, tx=optax.adam(1e-3))
    ocp.save(tmp_path / "ckpt", state.replace(step=jnp.asarray(3)))
    grown = state.replace(tx=optax.chain(optax.clip(1.0), optax.adam(1e-3)))

    with ocp.PyTreeCheckpointer() as checkpointer:
        kept = checkpointer.restore(tmp_path / "ckpt",
                                    args=restore_args_without_opt_state(grown))

    assert sorted(kept) == ["params", "step"] and int(kept["step"]) == 3


def test_a_target_without_the_field_is_refused():
    with pytest.raises(ocp.CheckpointError,
                       match=r"optimizer state at 'opt_state'.*got dict with \['params'\]"
                             r".*field="):
        restore_args_without_opt_state({"params": PARAMS})


def test_layers_of_a_list_pair_up_in_order(tmp_path):
    params = {"layers": [jnp.ones((2, 3)), jnp.ones((2, 3))]}
    grads = {"layers": [jnp.full((2, 3), 0.5), jnp.full((2, 3), -2.0)]}
    _, old = optax.adam(1e-3).update(grads, optax.adam(1e-3).init(params), params)
    ocp.save(tmp_path / "ckpt", {"opt_state": old})
    saved = ocp.restore(tmp_path / "ckpt")["opt_state"]

    grown = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    moved = transfer_opt_state(saved, grown.init(params))

    for index in (0, 1):
        np.testing.assert_array_equal(moved[1][0].mu["layers"][index],
                                      old[0].mu["layers"][index])
