"""Orbax both ways: a TrainState with an Optax chain saved by orbax-checkpoint restores
through the adapters with its real types, and Orbax restores what `attach` wrote."""

import types

import jax
import jaxpoint.core as ocp
import numpy as np
import optax
import orbax.checkpoint as orbax_ocp
from flax.training import train_state
from flax_adapter.models import batch_for, create_state, train_step
from jaxpoint.flax_adapter import abstract_train_state, attach


def _trained(steps: int = 2):
    state = create_state()
    for step in range(steps):
        state, _ = train_step(state, batch_for(step))
    return state


def _assert_leaves_equal(left, right):
    left_leaves = jax.tree_util.tree_leaves_with_path(left)
    right_leaves = jax.tree_util.tree_leaves_with_path(right)
    assert [p for p, _ in left_leaves] == [p for p, _ in right_leaves]
    for (path, a), (_, b) in zip(left_leaves, right_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def test_orbax_standard_save_restores_through_the_adapters(tmp_path):
    state = _trained()
    with orbax_ocp.CheckpointManager(tmp_path, item_names=("state",)) as manager:
        manager.save(2, args=orbax_ocp.args.Composite(
            state=orbax_ocp.args.StandardSave(state)))

    trainer = types.SimpleNamespace(state=create_state(seed=3), step=0)
    with attach(trainer, tmp_path) as ckpt:
        assert ckpt.restored_step == 2

    assert isinstance(trainer.state, train_state.TrainState)
    assert isinstance(trainer.state.opt_state[1], optax.InjectStatefulHyperparamsState)
    assert isinstance(trainer.state.opt_state[1].inner_state[0], optax.ScaleByAdamState)
    _assert_leaves_equal(trainer.state, state)


def test_orbax_restores_what_attach_wrote(tmp_path):
    state = _trained()
    with attach(types.SimpleNamespace(state=state), tmp_path) as ckpt:
        ckpt.save(2, force=True)

    target = abstract_train_state(create_state)
    with orbax_ocp.CheckpointManager(tmp_path, item_names=("state",)) as manager:
        restored = manager.restore(2, args=orbax_ocp.args.Composite(
            state=orbax_ocp.args.StandardRestore(target)))["state"]

    assert isinstance(restored, train_state.TrainState)
    assert isinstance(restored.opt_state[0], optax.EmptyState)
    assert isinstance(restored.opt_state[1].inner_state[0], optax.ScaleByAdamState)
    _assert_leaves_equal(restored, state)
    assert ocp.CheckpointManager(tmp_path).latest_step() == 2
