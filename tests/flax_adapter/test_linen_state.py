"""Linen TrainStates restore with real types; apply_fn and tx come from the target."""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import optax
import pytest
from flax.training import train_state
from flax_adapter.models import (
    MeshPartitionedMlp,
    PartitionedMlp,
    RngTrainState,
    batch_for,
    create_partitioned,
    create_rng_state,
    create_state,
    train_step,
)
from jaxpoint.flax_adapter import abstract_train_state, attach


def _assert_trees_equal(left, right):
    # Two states built by two create calls hold different tx closures: compare the types
    # and key paths of the leaves instead of the treedefs.
    left_leaves = jax.tree_util.tree_flatten_with_path(left)[0]
    right_leaves = jax.tree_util.tree_flatten_with_path(right)[0]
    assert [path for path, _ in left_leaves] == [path for path, _ in right_leaves]
    assert type(left) is type(right)
    for (path, a), (_, b) in zip(left_leaves, right_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(path))


def test_train_state_with_inject_hyperparams_restores_typed(tmp_path):
    state = create_state()
    for step in range(3):
        state, _ = train_step(state, batch_for(step))
    ocp.save(tmp_path / "ckpt", state)

    restored = ocp.restore(tmp_path / "ckpt", abstract_train_state(create_state))

    assert isinstance(restored, train_state.TrainState)
    assert isinstance(restored.opt_state[1], optax.InjectStatefulHyperparamsState)
    assert int(restored.step) == 3
    _assert_trees_equal(restored, state)
    # apply_fn and tx are the target's: the restored state trains on.
    train_step(restored, batch_for(3))


def test_subclass_with_extra_fields_and_python_scalars(tmp_path):
    trainer = types.SimpleNamespace(state=create_rng_state(), step=0)
    with attach(trainer, tmp_path) as ckpt:
        ckpt.save(1, force=True)  # step and epoch are still Python ints here
    # The resuming trainer's step is an int32 array (as after a jitted step): the saved
    # Python int comes back as that, while `epoch`, a Python int in the target, stays one.
    live = create_rng_state(seed=5)
    fresh = types.SimpleNamespace(state=live.replace(step=jnp.asarray(7, jnp.int32)), step=None)

    with attach(fresh, tmp_path) as ckpt:
        assert ckpt.restored_step == 1 and fresh.step == 1

    assert isinstance(fresh.state, RngTrainState)
    assert isinstance(fresh.state.step, jax.Array) and fresh.state.step.dtype == jnp.int32
    assert int(fresh.state.step) == 0
    assert fresh.state.epoch == 0 and isinstance(fresh.state.epoch, int)
    _assert_trees_equal(fresh.state.params, trainer.state.params)
    np.testing.assert_array_equal(fresh.state.key, trainer.state.key)


def test_abstract_target_uses_logical_partitioning_on_a_mesh(tmp_path):
    mesh = jax.make_mesh((2, 2), ("data", "model"))
    rules = (("embed", "data"), ("hidden", "model"))

    def create():
        model = PartitionedMlp()
        params = model.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
        return train_state.TrainState.create(apply_fn=model.apply, params=params,
                                             tx=optax.adam(1e-3))

    abstract = abstract_train_state(create, mesh, logical_axis_rules=rules)

    kernel = abstract.params["Dense_0"]["kernel"]
    assert kernel.unbox().sharding.spec == jax.sharding.PartitionSpec("data", "model")
    assert abstract.params["Dense_0"]["bias"].sharding.spec == jax.sharding.PartitionSpec()
    state = create()
    state = state.replace(step=jnp.asarray(state.step))  # as after the first jitted step
    ocp.save(tmp_path / "ckpt", state)
    restored = ocp.restore(tmp_path / "ckpt", abstract)
    assert restored.params["Dense_0"]["kernel"].unbox().sharding.spec == (
        jax.sharding.PartitionSpec("data", "model"))


def test_mesh_axis_partitioning_is_kept_as_written(tmp_path):
    mesh = jax.make_mesh((2, 2), ("data", "model"))
    create = create_partitioned(MeshPartitionedMlp())

    # Rules for logical names leave `nn.with_partitioning`'s mesh axes alone.
    abstract = abstract_train_state(create, mesh, logical_axis_rules=(("embed", "data"),))

    column = jax.sharding.PartitionSpec(None, "model")
    assert abstract.params["Dense_0"]["kernel"].unbox().sharding.spec == column
    assert abstract.opt_state[0].mu["Dense_0"]["kernel"].unbox().sharding.spec == column
    ocp.save(tmp_path / "ckpt", create().replace(step=jnp.asarray(0)))
    restored = ocp.restore(tmp_path / "ckpt", abstract)
    assert restored.params["Dense_0"]["kernel"].unbox().sharding.spec == column


def test_logical_rules_set_with_the_flax_context_are_used():
    mesh = jax.make_mesh((2, 2), ("data", "model"))
    with nn.logical_axis_rules((("embed", "model"), ("hidden", "data"))):
        abstract = abstract_train_state(create_partitioned(PartitionedMlp()), mesh)

    wanted = jax.sharding.PartitionSpec("model", "data")
    assert abstract.params["Dense_0"]["kernel"].unbox().sharding.spec == wanted
    assert abstract.opt_state[0].nu["Dense_0"]["kernel"].unbox().sharding.spec == wanted


def test_partitioning_on_an_axis_the_mesh_lacks_is_refused():
    mesh = jax.make_mesh((4,), ("data",))
    with pytest.raises(ocp.CheckpointError,
                       match=r"params\.Dense_0\.kernel .*name axes of the mesh \('data',\), "
                             r"found \['model'\].*logical_axis_rules="):
        abstract_train_state(create_partitioned(MeshPartitionedMlp()), mesh)


def test_abstract_target_without_a_mesh_restores_on_one_device(tmp_path):
    state, _ = train_step(create_state(), batch_for(0))
    ocp.save(tmp_path / "ckpt", state)

    target = abstract_train_state(create_state)
    restored = ocp.restore(tmp_path / "ckpt", target)

    assert restored.params["Dense_0"]["kernel"].sharding == jax.sharding.SingleDeviceSharding(
        jax.devices()[0])
    assert restored.apply_fn is target.apply_fn and restored.tx is target.tx
    _assert_trees_equal(restored.params, state.params)


def test_leaves_without_partitioning_metadata_take_the_saved_shardings(tmp_path):
    mesh = jax.make_mesh((2, 2), ("data", "model"))
    column = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "model"))
    state, _ = train_step(create_state(), batch_for(0))
    state = state.replace(params={**state.params, "Dense_0": {
        **state.params["Dense_0"],
        "kernel": jax.device_put(state.params["Dense_0"]["kernel"], column)}})
    ocp.save(tmp_path / "ckpt", state)
    with ocp.StandardCheckpointer() as checkpointer:
        saved = checkpointer.metadata(tmp_path / "ckpt").item_metadata

    target = abstract_train_state(create_state, mesh, saved=saved)

    assert target.params["Dense_0"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(
        None, "model")
    assert target.params["Dense_0"]["bias"].sharding.spec == jax.sharding.PartitionSpec()
    restored = ocp.restore(tmp_path / "ckpt", target)
    assert restored.params["Dense_0"]["kernel"].sharding.spec == column.spec
