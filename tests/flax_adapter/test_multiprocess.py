"""attach under jax.distributed: 2 real processes save and resume a sharded TrainState."""

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
    }


def test_two_processes_save_and_resume_a_sharded_train_state(tmp_path):
    reports = run_processes(_save_then_resume, num_processes=2, devices_per_process=2,
                            timeout_s=120, args=(str(tmp_path / "run"),))

    for report in reports:
        assert report == {"restored_step": 5, "step": 5,
                          "spec": "P(None, 'data')", "local_shards": 2,
                          "equal": True, "adam_is_typed": True}


class PreemptedAtStep:
    """A preemption source that reports the same step on every process, like JAX's sync
    point does, without a scheduler to send the notice."""

    def __init__(self, step: int) -> None:
        self._step = step

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def reached_preemption(self, step: int) -> bool:
        return step >= self._step

    def stop_process(self) -> None:
        raise AssertionError("attach asks reached_preemption, so it never stops the process")


def _train_until_preempted(directory: str) -> dict:
    import types

    import jaxpoint.core as ocp
    from jaxpoint.flax_adapter import attach

    mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    trainer = types.SimpleNamespace(state=_sharded_state(mesh, seed=0))
    options = ocp.CheckpointManagerOptions(save_interval_steps=100)
    stopped_at = None
    with attach(trainer, directory, options=options,
                preemption_source=PreemptedAtStep(3)) as ckpt:
        for step in range(1, 10):
            trainer.state = trainer.state.replace(step=jnp.asarray(step))
            ckpt.on_step_end(step)
            if ckpt.should_stop:
                stopped_at = step
                break
        steps = ckpt.manager.all_steps()
    return {"stopped_at": stopped_at, "steps": steps}


def test_two_processes_stop_at_the_preemption_step_after_saving_it(tmp_path):
    reports = run_processes(_train_until_preempted, num_processes=2, devices_per_process=2,
                            timeout_s=120, args=(str(tmp_path / "run"),))

    assert reports == [{"stopped_at": 3, "steps": [1, 3]}] * 2
