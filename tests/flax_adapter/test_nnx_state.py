"""NNX models and optimizers: pure-dict files, typed Variables back, new shardings."""

import types

import jax
import jaxpoint.core as ocp
import numpy as np
from flax import nnx
from flax_adapter.nnx_models import batch_for, create, train_step
from jaxpoint.flax_adapter import (
    abstract_nnx,
    attach,
    has_variable_wrappers,
    nnx_tree,
    pure_target,
    restore_into_state,
)


def _trained(steps: int = 2):
    model, optimizer = create()
    for step in range(steps):
        train_step(model, optimizer, *batch_for(step))
    return model, optimizer


def _assert_states_equal(left, right):
    left_leaves = jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(left))
    right_leaves = jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(right))
    assert [p for p, _ in left_leaves] == [p for p, _ in right_leaves]
    for (path, a), (_, b) in zip(left_leaves, right_leaves, strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def test_model_and_optimizer_restore_with_variable_types(tmp_path):
    model, optimizer = _trained()
    ocp.save(tmp_path / "ckpt", nnx_tree((model, optimizer)))
    assert not has_variable_wrappers(ocp.restore(tmp_path / "ckpt"))

    graphdef, abstract_state = abstract_nnx(lambda: create(seed=9))
    restored = ocp.restore(tmp_path / "ckpt", pure_target(abstract_state))
    new_model, new_optimizer = nnx.merge(graphdef, restore_into_state(abstract_state, restored))

    assert isinstance(new_model.norm.mean, nnx.BatchStat)
    assert isinstance(new_model.dense.kernel, nnx.Param)
    assert isinstance(new_optimizer, nnx.Optimizer)
    assert int(new_optimizer.step[...]) == 2
    _assert_states_equal(nnx.state((new_model, new_optimizer)), nnx.state((model, optimizer)))
    # Same next step from both: batch stats, RNG stream and moments all came back.
    x, y = batch_for(5)
    assert float(train_step(new_model, new_optimizer, x, y)) == float(
        train_step(model, optimizer, x, y))


def test_a_state_saved_with_value_wrappers_is_read_too(tmp_path):
    model, optimizer = _trained()
    ocp.save(tmp_path / "ckpt", nnx.state((model, optimizer)))  # as Orbax users save it
    assert has_variable_wrappers(ocp.restore(tmp_path / "ckpt"))

    graphdef, abstract_state = abstract_nnx(lambda: create(seed=9))
    restored = ocp.restore(tmp_path / "ckpt", abstract_state)
    new_model, _ = nnx.merge(graphdef, restored)

    assert isinstance(new_model.norm.var, nnx.BatchStat)
    _assert_states_equal(nnx.state(new_model), nnx.state(model))


def test_restores_onto_a_new_sharding(tmp_path):
    model, optimizer = _trained()
    ocp.save(tmp_path / "ckpt", nnx_tree((model, optimizer)))
    mesh = jax.make_mesh((4,), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    graphdef, abstract_state = abstract_nnx(create, shardings=replicated)
    restored = ocp.restore(tmp_path / "ckpt", pure_target(abstract_state))

    assert restored[0]["dense"]["kernel"].sharding == replicated


def test_attach_updates_nnx_objects_in_place(tmp_path):
    model, optimizer = _trained()
    trainer = types.SimpleNamespace(state=(model, optimizer))
    with attach(trainer, tmp_path) as ckpt:
        ckpt.save(2, force=True)

    fresh_model, fresh_optimizer = create(seed=7)
    resumed = types.SimpleNamespace(state=(fresh_model, fresh_optimizer))
    with attach(resumed, tmp_path) as ckpt:
        assert ckpt.restored_step == 2

    assert resumed.state[0] is fresh_model
    _assert_states_equal(nnx.state((fresh_model, fresh_optimizer)),
                         nnx.state((model, optimizer)))


def test_attach_reads_an_nnx_state_orbax_wrote_with_value_wrappers(tmp_path):
    import orbax.checkpoint as orbax_ocp

    model, optimizer = _trained()
    with orbax_ocp.CheckpointManager(tmp_path, item_names=("state",)) as manager:
        manager.save(2, args=orbax_ocp.args.Composite(
            state=orbax_ocp.args.StandardSave(nnx.state((model, optimizer)))))

    fresh_model, fresh_optimizer = create(seed=7)
    with attach(types.SimpleNamespace(state=(fresh_model, fresh_optimizer)), tmp_path) as ckpt:
        assert ckpt.restored_step == 2

    assert isinstance(fresh_model.norm.mean, nnx.BatchStat)
    _assert_states_equal(nnx.state((fresh_model, fresh_optimizer)),
                         nnx.state((model, optimizer)))
