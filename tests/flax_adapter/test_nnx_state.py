"""NNX models and optimizers: pure-dict files, typed Variables back, new shardings."""

import types

import jax
import jaxpoint.core as ocp
import numpy as np
import optax
import pytest
from flax import nnx
from flax_adapter.nnx_models import BatchNormMlp, batch_for, create, train_step
from jaxpoint.flax_adapter import (
    abstract_nnx,
    attach,
    has_variable_wrappers,
    nnx_tree,
    pure_target,
    restore_into_state,
)
from jaxpoint.optax_adapter import OptStateMismatchError


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
    assert isinstance(new_model.dropout.rngs.key, nnx.RngKey)
    assert isinstance(new_model.dropout.rngs.count, nnx.RngCount)
    assert int(new_model.dropout.rngs.count[...]) == int(model.dropout.rngs.count[...]) > 0
    assert isinstance(new_optimizer, nnx.Optimizer)
    assert isinstance(new_optimizer.opt_state[0], optax.ScaleByAdamState)
    assert isinstance(new_optimizer.step, nnx.OptState)
    assert isinstance(new_optimizer.opt_state[0].mu["dense"]["kernel"], nnx.OptState)
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
    new_model, _ = nnx.merge(graphdef, restore_into_state(abstract_state, restored))
    assert new_model.dense.kernel[...].sharding == replicated
    _assert_states_equal(nnx.state(new_model), nnx.state(model))


def test_restores_onto_per_leaf_shardings(tmp_path):
    model, optimizer = _trained()
    ocp.save(tmp_path / "ckpt", nnx_tree((model, optimizer)))
    mesh = jax.make_mesh((2, 2), ("data", "model"))
    columns = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "model"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    _, shapes = abstract_nnx(create)
    # The first layer's kernel and its Adam moments split by columns, the rest replicated.
    shardings = jax.tree_util.tree_map_with_path(
        lambda path, leaf: columns if leaf.shape == (3, 4) else replicated, shapes)

    graphdef, abstract_state = abstract_nnx(create, shardings=shardings)
    restored = ocp.restore(tmp_path / "ckpt", pure_target(abstract_state))
    new_model, new_optimizer = nnx.merge(graphdef, restore_into_state(abstract_state, restored))

    assert new_model.dense.kernel[...].sharding == columns
    assert new_optimizer.opt_state[0].mu["dense"]["kernel"][...].sharding == columns
    assert new_model.out.kernel[...].sharding == replicated
    _assert_states_equal(nnx.state((new_model, new_optimizer)), nnx.state((model, optimizer)))


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


def test_the_pure_dict_form_reads_and_writes_the_same_files(tmp_path):
    model, optimizer = _trained()
    # Written by attach, read back by hand with nnx.to_pure_dict / replace_by_pure_dict.
    with attach(types.SimpleNamespace(state=model), tmp_path / "by_attach") as ckpt:
        ckpt.save(2, force=True)
    abstract_model = nnx.eval_shape(lambda: create(seed=9)[0])
    graphdef, state = nnx.split(abstract_model)
    pure = ocp.CheckpointManager(tmp_path / "by_attach").restore(2, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(nnx.to_pure_dict(state))))["state"]
    nnx.replace_by_pure_dict(state, pure)
    _assert_states_equal(nnx.state(nnx.merge(graphdef, state)), nnx.state(model))

    # Written by hand as a pure dict, read by attach into a live model.
    with ocp.CheckpointManager(tmp_path / "by_hand") as manager:
        manager.save(3, args=ocp.args.Composite(
            state=ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model)))))
    fresh_model, _ = create(seed=7)
    with attach(types.SimpleNamespace(state=fresh_model), tmp_path / "by_hand") as ckpt:
        assert ckpt.restored_step == 3
    _assert_states_equal(nnx.state(fresh_model), nnx.state(model))


def _saved_with_adamw(directory):
    model, optimizer = _trained()
    with attach(types.SimpleNamespace(state=(model, optimizer)), directory) as ckpt:
        ckpt.save(2, force=True)
    return model, optimizer


def _with_sgd(seed: int = 7):
    model = BatchNormMlp(nnx.Rngs(seed, dropout=seed + 1))
    return model, nnx.Optimizer(model, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)


def test_a_changed_nnx_optimizer_raises_naming_the_node_and_the_way_out(tmp_path):
    _saved_with_adamw(tmp_path)
    with pytest.raises(OptStateMismatchError,
                       match=r"the checkpoint has state\.1\.opt_state\.0\.count, the target "
                             r"has state\.1\.opt_state\.0\.trace\..*"
                             r"optimizer_changed='reinitialize'"):
        attach(types.SimpleNamespace(state=_with_sgd()), tmp_path)


def test_reinitialize_restores_the_model_and_keeps_the_new_optimizer_fresh(tmp_path):
    model, optimizer = _saved_with_adamw(tmp_path)
    new_model, new_optimizer = _with_sgd()
    with attach(types.SimpleNamespace(state=(new_model, new_optimizer)), tmp_path,
                optimizer_changed="reinitialize") as ckpt:
        assert ckpt.restored_step == 2

    _assert_states_equal(nnx.state(new_model), nnx.state(model))
    assert int(new_optimizer.step[...]) == 2
    trace = new_optimizer.opt_state[0].trace
    np.testing.assert_array_equal(trace["dense"]["kernel"][...], 0)
    train_step(new_model, new_optimizer, *batch_for(3))


def test_transfer_keeps_the_adam_moments_across_a_new_clipping_stage(tmp_path):
    model, optimizer = _saved_with_adamw(tmp_path)
    _assert_transfer_keeps_adam_moments(tmp_path, model, optimizer)


def _assert_transfer_keeps_adam_moments(directory, model, optimizer) -> None:
    """attach(optimizer_changed="transfer") onto clip + adamw keeps the saved Adam moments."""
    new_model = BatchNormMlp(nnx.Rngs(7, dropout=8))
    grown = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    new_optimizer = nnx.Optimizer(new_model, grown, wrt=nnx.Param)
    with attach(types.SimpleNamespace(state=(new_model, new_optimizer)), directory,
                optimizer_changed="transfer"):
        pass

    _assert_states_equal(nnx.state(new_model), nnx.state(model))
    assert isinstance(new_model.dropout.rngs.key, nnx.RngKey)
    adam = new_optimizer.opt_state[1][0]
    assert isinstance(adam, optax.ScaleByAdamState) and int(adam.count[...]) == 2
    np.testing.assert_array_equal(adam.mu["dense"]["kernel"][...],
                                  optimizer.opt_state[0].mu["dense"]["kernel"][...])
    np.testing.assert_array_equal(adam.nu["norm"]["scale"][...],
                                  optimizer.opt_state[0].nu["norm"]["scale"][...])
    train_step(new_model, new_optimizer, *batch_for(3))


def test_transfer_refuses_a_model_that_changed_too(tmp_path):
    _saved_with_adamw(tmp_path)
    wider = nnx.Linear(3, 8, rngs=nnx.Rngs(0))
    trainer = types.SimpleNamespace(state=(wider, nnx.Optimizer(wider, optax.sgd(0.1),
                                                                wrt=nnx.Param)))
    with pytest.raises(ocp.TreeMismatchError, match=r"Expected the checkpoint to hold "
                       r"state\.0\.bias with shape \(8,\), found nothing"):
        attach(trainer, tmp_path, optimizer_changed="transfer")


def _saved_by_orbax_with_value_wrappers(directory):
    import orbax.checkpoint as orbax_ocp

    model, optimizer = _trained()
    with orbax_ocp.CheckpointManager(directory, item_names=("state",)) as manager:
        manager.save(2, args=orbax_ocp.args.Composite(
            state=orbax_ocp.args.StandardSave(nnx.state((model, optimizer)))))
    return model, optimizer


def test_an_orbax_wrapped_nnx_state_gets_the_optimizer_changed_error_and_ways_out(tmp_path):
    model, optimizer = _saved_by_orbax_with_value_wrappers(tmp_path)
    with pytest.raises(OptStateMismatchError,
                       match=r"the checkpoint has state\.1\.opt_state\.0\.count, the target "
                             r"has state\.1\.opt_state\.0\.trace\..*"
                             r"optimizer_changed='reinitialize'"):
        attach(types.SimpleNamespace(state=_with_sgd()), tmp_path)

    new_model, new_optimizer = _with_sgd()
    with attach(types.SimpleNamespace(state=(new_model, new_optimizer)), tmp_path,
                optimizer_changed="reinitialize") as ckpt:
        assert ckpt.restored_step == 2
    _assert_states_equal(nnx.state(new_model), nnx.state(model))
    assert isinstance(new_model.norm.mean, nnx.BatchStat)
    assert int(new_optimizer.step[...]) == 2
    np.testing.assert_array_equal(new_optimizer.opt_state[0].trace["dense"]["kernel"][...], 0)
    train_step(new_model, new_optimizer, *batch_for(3))

    _assert_transfer_keeps_adam_moments(tmp_path, model, optimizer)
