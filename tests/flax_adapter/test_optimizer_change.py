"""attach when the optimizer changed: a clear error, or reinitialize / transfer."""

import types

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import optax
import pytest
from flax.training import train_state
from flax_adapter.models import Mlp, batch_for, train_step
from jaxpoint.flax_adapter import attach
from jaxpoint.optax_adapter import OptStateMismatchError


def _state(tx, seed: int = 0):
    model = Mlp()
    params = model.init(jax.random.key(seed), jnp.ones((1, 3)))["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def _saved_with_adam(directory):
    state = _state(optax.adam(1e-3))
    for step in range(2):
        state, _ = train_step(state, batch_for(step))
    with attach(types.SimpleNamespace(state=state), directory) as ckpt:
        ckpt.save(2, force=True)
    return state


def test_a_changed_optimizer_raises_naming_the_node_and_the_ways_out(tmp_path):
    _saved_with_adam(tmp_path)
    trainer = types.SimpleNamespace(state=_state(optax.sgd(0.1, momentum=0.9), seed=1))
    with pytest.raises(OptStateMismatchError,
                       match=r"the checkpoint has state\.opt_state\.0\.count, the target has "
                             r"state\.opt_state\.0\.trace\..*optimizer_changed='reinitialize'"):
        attach(trainer, tmp_path)


def test_reinitialize_keeps_params_and_starts_the_optimizer_afresh(tmp_path):
    saved = _saved_with_adam(tmp_path)
    trainer = types.SimpleNamespace(state=_state(optax.sgd(0.1, momentum=0.9), seed=1))
    with attach(trainer, tmp_path, optimizer_changed="reinitialize") as ckpt:
        assert ckpt.restored_step == 2

    assert int(trainer.state.step) == 2
    np.testing.assert_array_equal(trainer.state.params["Dense_0"]["kernel"],
                                  saved.params["Dense_0"]["kernel"])
    assert isinstance(trainer.state.opt_state[0], optax.TraceState)
    np.testing.assert_array_equal(trainer.state.opt_state[0].trace["Dense_0"]["kernel"], 0)


def test_transfer_keeps_adam_moments_across_a_new_clipping_stage(tmp_path):
    saved = _saved_with_adam(tmp_path)
    grown = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    trainer = types.SimpleNamespace(state=_state(grown, seed=1))
    with attach(trainer, tmp_path, optimizer_changed="transfer"):
        pass

    adam = trainer.state.opt_state[1][0]
    assert isinstance(adam, optax.ScaleByAdamState)
    np.testing.assert_array_equal(adam.mu["Dense_1"]["kernel"],
                                  saved.opt_state[0].mu["Dense_1"]["kernel"])
    assert int(adam.count) == 2
    train_step(trainer.state, batch_for(3))


def test_an_unknown_choice_is_refused(tmp_path):
    with pytest.raises(ocp.CheckpointError, match=r"Expected optimizer_changed to be one of "
                                                  r"\('raise', 'reinitialize', 'transfer'\), "
                                                  r"got 'keep'"):
        attach(types.SimpleNamespace(state={}), tmp_path, optimizer_changed="keep")
