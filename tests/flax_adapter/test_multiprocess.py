"""attach under jax.distributed: 2 real processes save and resume a sharded linen TrainState
and sharded NNX objects, and stop together at JAX's preemption sync point."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state
from flax_adapter.models import PartitionedMlp
from jaxpoint.core.testing.multiprocess import run_processes

RULES = (("embed", None), ("hidden", "data"))


def _create(seed: int):
    def create():
        model = PartitionedMlp()
        params = model.init(jax.random.key(seed), jnp.ones((1, 4)))["params"]
        return train_state.TrainState.create(apply_fn=model.apply, params=params,
                                             tx=optax.adam(1e-3))
    return create


def _sharded_state(mesh, seed: int):
    from jaxpoint.flax_adapter import abstract_train_state

    create = _create(seed)
    abstract = abstract_train_state(create, mesh, logical_axis_rules=RULES)
    shardings = jax.tree_util.tree_map(lambda leaf: leaf.sharding, abstract)
    return jax.jit(create, out_shardings=shardings)()


def _sharded_nnx(mesh, seed: int):
    """An NNX model and its optimizer built straight onto the mesh: matrices split by
    columns, everything else replicated."""
    from flax import nnx

    def spec(leaf):
        return jax.sharding.PartitionSpec(None, "data") if leaf.ndim == 2 else (
            jax.sharding.PartitionSpec())

    @nnx.jit
    def create():
        model = nnx.Linear(4, 8, rngs=nnx.Rngs(seed))
        optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        state = nnx.state((model, optimizer))
        nnx.update((model, optimizer), jax.tree_util.tree_map(
            lambda leaf: jax.lax.with_sharding_constraint(
                leaf, jax.sharding.NamedSharding(mesh, spec(leaf))), state))
        return model, optimizer

    return create()


def _gathered(array) -> np.ndarray:
    return np.asarray(jax.experimental.multihost_utils.process_allgather(array, tiled=True))


def _save_then_resume_nnx(directory: str, mesh) -> dict:
    import types

    from jaxpoint.flax_adapter import attach

    model, optimizer = _sharded_nnx(mesh, seed=0)
    with attach(types.SimpleNamespace(state=(model, optimizer)), directory) as ckpt:
        ckpt.on_step_end(3)
    new_model, new_optimizer = _sharded_nnx(mesh, seed=1)
    with attach(types.SimpleNamespace(state=(new_model, new_optimizer)), directory) as ckpt:
        restored_step = ckpt.restored_step
    kernel = new_model.kernel[...]
    return {
        "nnx_restored_step": restored_step,
        "nnx_spec": str(kernel.sharding.spec),
        "nnx_mu_spec": str(new_optimizer.opt_state[0].mu["kernel"][...].sharding.spec),
        "nnx_equal": bool(np.array_equal(_gathered(kernel), _gathered(model.kernel[...]))),
    }


def _save_then_resume(directory: str) -> dict:
    import types

    from jaxpoint.flax_adapter import attach

    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    state = _sharded_state(mesh, seed=0)
    state = state.replace(step=jnp.asarray(5), params=jax.tree_util.tree_map(
        lambda x: x * 2, state.params))
    with attach(types.SimpleNamespace(state=state), directory) as ckpt:
        ckpt.on_step_end(5)

    resumed = types.SimpleNamespace(state=_sharded_state(mesh, seed=1))
    with attach(resumed, directory) as ckpt:
        restored_step = ckpt.restored_step
    kernel = resumed.state.params["Dense_0"]["kernel"].unbox()
    expected = state.params["Dense_0"]["kernel"].unbox()
    return {
        "restored_step": restored_step,
        "step": int(resumed.state.step),
        "spec": str(kernel.sharding.spec),
        "local_shards": len(kernel.addressable_shards),
        "equal": bool(np.array_equal(jax.experimental.multihost_utils.process_allgather(
            kernel, tiled=True), jax.experimental.multihost_utils.process_allgather(
            expected, tiled=True))),
        "adam_is_typed": isinstance(resumed.state.opt_state[0], optax.ScaleByAdamState),
        **_save_then_resume_nnx(directory + "-nnx", mesh),
    }


def test_two_processes_save_and_resume_sharded_linen_and_nnx_states(tmp_path):
    reports = run_processes(_save_then_resume, num_processes=2, devices_per_process=2,
                            timeout_s=120, args=(str(tmp_path / "run"),))

    for report in reports:
        assert report == {"restored_step": 5, "step": 5,
                          "spec": "P(None, 'data')", "local_shards": 2,
                          "equal": True, "adam_is_typed": True,
                          "nnx_restored_step": 3, "nnx_spec": "P(None, 'data')",
                          "nnx_mu_spec": "P(None, 'data')", "nnx_equal": True}


_SIGNAL_STEP = 2
_MAX_STEPS = 10_000  # the loop ends at the sync point long before; a bound for a broken one


def _train_until_preempted(directory: str) -> dict:
    """Process 1 receives SIGTERM at step 2; JAX's preemption service picks the step at
    which every process saves and stops (the default preemption source: nothing faked)."""
    import os
    import signal
    import types

    import jaxpoint.core as ocp
    from jaxpoint.core import multihost
    from jaxpoint.flax_adapter import attach

    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    trainer = types.SimpleNamespace(state=_sharded_state(mesh, seed=0))
    options = ocp.CheckpointManagerOptions(save_interval_steps=1_000_000)
    stopped_at = None
    with attach(trainer, directory, options=options) as ckpt:
        for step in range(1, _MAX_STEPS):
            trainer.state = trainer.state.replace(step=jnp.asarray(step))
            if multihost.process_index() == 1 and step == _SIGNAL_STEP:
                os.kill(os.getpid(), signal.SIGTERM)
            ckpt.on_step_end(step)
            if ckpt.should_stop:
                stopped_at = step
                break
            # A training step's collectives: the notice reaches the other process meanwhile.
            multihost.sync_global_processes("train_step", timeout_s=30)
        steps = ckpt.manager.all_steps()
        saved_step = int(ckpt.manager.restore(
            stopped_at, args=ocp.args.Composite(state=ocp.args.StandardRestore(
                trainer.state)))["state"].step)
    return {"stopped_at": stopped_at, "steps": steps, "saved_step": saved_step}


def test_two_processes_stop_at_jaxs_preemption_sync_point_after_saving_it(tmp_path):
    reports = run_processes(_train_until_preempted, num_processes=2, devices_per_process=2,
                            timeout_s=120, args=(str(tmp_path / "run"),))

    stopped_at = reports[0]["stopped_at"]
    assert stopped_at is not None and stopped_at >= _SIGNAL_STEP
    # The same step on both processes, saved off the interval, committed before the stop.
    assert reports == [{"stopped_at": stopped_at, "steps": [1, stopped_at],
                        "saved_step": stopped_at}] * 2
