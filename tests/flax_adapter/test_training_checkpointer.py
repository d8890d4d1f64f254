"""attach(): saves by policy, resumes, extra items and config, best steps, preemption."""

import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import jax
import jaxpoint.core as ocp
import ml_collections
import numpy as np
import pytest
from flax_adapter.models import batch_for, create_state, train_step
from jaxpoint.core.multihost.preemption import reset_preemption_handler
from jaxpoint.flax_adapter import TrainingCheckpointer, attach


@pytest.fixture
def forget_sigterm():
    yield
    reset_preemption_handler()


def _trainer(**extra):
    return types.SimpleNamespace(state=create_state(), **extra)


def _train(trainer, ckpt, steps, *, first=1, metrics_fn=None):
    for step in range(first, first + steps):
        trainer.state, loss = train_step(trainer.state, batch_for(step))
        ckpt.on_step_end(step, metrics=None if metrics_fn is None else metrics_fn(step, loss))
        if ckpt.should_stop:
            return step
    return first + steps - 1


def test_saves_by_policy_and_resumes_the_latest_step(tmp_path):
    options = ocp.CheckpointManagerOptions(save_interval_steps=2)
    trainer = _trainer(step=0)
    with attach(trainer, tmp_path, options=options) as ckpt:
        assert ckpt.restored_step is None
        _train(trainer, ckpt, 5)
        saved_state = trainer.state  # step 5 is not saved: step 4 is the latest
    # Step 1 is the manager's initial save into an empty directory, as in Orbax.
    assert ocp.CheckpointManager(tmp_path).all_steps() == [1, 2, 4]

    resumed = _trainer(step=0)
    with attach(resumed, tmp_path, options=options) as ckpt:
        assert ckpt.restored_step == 4 and resumed.step == 4
    # Saved as an int32 array; the fresh TrainState's step is a Python int: it stays one.
    assert type(resumed.state.step) is int and resumed.state.step == 4
    assert not np.array_equal(resumed.state.params["Dense_0"]["kernel"],
                              saved_state.params["Dense_0"]["kernel"])


def test_extra_items_and_config_are_saved_as_json_and_restored(tmp_path):
    config = ml_collections.ConfigDict({"model": {"features": 4}, "lr": 0.01})
    position = {"epoch": 0, "index": 0}
    trainer = _trainer()
    with attach(trainer, tmp_path, items={"data": lambda: dict(position)},
                config=config) as ckpt:
        position.update(epoch=1, index=17)
        ckpt.on_step_end(1)

    with attach(_trainer(), tmp_path, items={"data": lambda: {}},
                config=ml_collections.ConfigDict()) as ckpt:
        assert ckpt.restored_items == {"data": {"epoch": 1, "index": 17}}
        assert isinstance(ckpt.restored_config, ml_collections.ConfigDict)
        assert ckpt.restored_config.model.features == 4 and ckpt.restored_config.lr == 0.01


def test_items_added_to_a_running_job_keep_their_values_until_first_saved(tmp_path, caplog):
    trainer = _trainer()
    with attach(trainer, tmp_path) as ckpt:
        _train(trainer, ckpt, 1)  # saves step 1 by the default policy

    # The job restarts with a data-iterator item and a config the old step lacks.
    position = {"epoch": 0, "index": 3}
    resumed = _trainer()
    caplog.set_level("INFO", logger="jaxpoint.flax_adapter.training_checkpointer")
    with attach(resumed, tmp_path, items={"data": lambda: dict(position)},
                config={"lr": 0.1}) as ckpt:
        assert ckpt.restored_step == 1
        assert ckpt.restored_items == {} and ckpt.restored_config is None
        position.update(index=9)
        ckpt.save(2, force=True)
    _assert_trees_equal(resumed.state.params, trainer.state.params)
    assert "Step 1 has no item 'data' (saved before it was added)" in caplog.text
    assert "Step 1 has no item 'config'" in caplog.text

    # The reverse: a step holding items this attach does not name restores the state.
    caplog.clear()
    with attach(_trainer(), tmp_path) as ckpt:
        assert ckpt.restored_step == 2 and ckpt.restored_items == {}
    assert "Step 2 also holds item 'config', which attach does not name" in caplog.text
    assert "Step 2 also holds item 'data', which attach does not name" in caplog.text
    with attach(_trainer(), tmp_path, items={"data": lambda: {}}) as ckpt:
        assert ckpt.restored_items == {"data": {"epoch": 0, "index": 9}}


def _assert_trees_equal(left, right):
    for a, b in zip(jax.tree_util.tree_leaves(left), jax.tree_util.tree_leaves(right),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_plain_dict_config_comes_back_as_a_dict(tmp_path):
    with attach(types.SimpleNamespace(state={"w": jax.numpy.ones(2)}), tmp_path,
                config={"lr": 0.1, "layers": [4, 4]}) as ckpt:
        ckpt.save(1, force=True)
    with attach(types.SimpleNamespace(state={"w": jax.numpy.zeros(2)}), tmp_path,
                config={}) as ckpt:
        assert ckpt.restored_config == {"lr": 0.1, "layers": [4, 4]}


def test_clu_call_and_hook_list(tmp_path):
    trainer = _trainer(callbacks=[])
    with attach(trainer, tmp_path) as ckpt:
        assert trainer.callbacks == [ckpt]
        for hook in trainer.callbacks:
            hook(3, t=123.0)
    assert ocp.CheckpointManager(tmp_path).all_steps() == [3]


def test_keeps_the_best_steps_by_a_metric(tmp_path):
    options = ocp.CheckpointManagerOptions(max_to_keep=2, best_fn=lambda m: m["loss"],
                                           best_mode="min")
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: 2.0, 5: 3.0}
    trainer = _trainer()
    with attach(trainer, tmp_path, options=options) as ckpt:
        _train(trainer, ckpt, 5, metrics_fn=lambda step, _: {"loss": losses[step]})
        assert ckpt.manager.best_step() == 2
    assert ocp.CheckpointManager(tmp_path).all_steps() == [2, 4]


def test_close_waits_for_the_async_save(tmp_path):
    trainer = _trainer()
    ckpt = attach(trainer, tmp_path)
    _train(trainer, ckpt, 1)
    ckpt.close()
    ckpt.close()
    restored = ocp.CheckpointManager(tmp_path).restore(1)
    assert int(restored["state"]["step"]) == 1


def test_sigterm_saves_the_current_step_and_asks_to_stop(tmp_path, forget_sigterm):
    options = ocp.CheckpointManagerOptions(save_interval_steps=100)
    trainer = _trainer()
    with attach(trainer, tmp_path, options=options) as ckpt:
        _train(trainer, ckpt, 2)
        assert not ckpt.should_stop
        os.kill(os.getpid(), signal.SIGTERM)
        stopped_at = _train(trainer, ckpt, 10, first=3)
        assert ckpt.should_stop and stopped_at == 3
        # Step 3 is committed on disk before should_stop turns True.
        on_disk = ocp.CheckpointManager(
            tmp_path, ocp.CheckpointManagerOptions(read_only=True)).all_steps()
        assert on_disk == [1, 3]


class NoticeFilePreemption:
    """A scheduler that announces preemption by writing a file (some clusters do this)."""

    def __init__(self, notice: Path) -> None:
        self._notice = notice

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        pass

    def reached_preemption(self, step: int) -> bool:
        return self._notice.exists()

    def stop_process(self) -> None:
        raise AssertionError("the loop stopped on should_stop, so the manager never ends it")


def test_a_preemption_source_replaces_sigterm(tmp_path):
    notice = tmp_path / "preempt-notice"
    options = ocp.CheckpointManagerOptions(save_interval_steps=100)
    trainer = _trainer()
    with attach(trainer, tmp_path / "run", options=options,
                preemption_source=NoticeFilePreemption(notice)) as ckpt:
        _train(trainer, ckpt, 2)
        assert not ckpt.should_stop
        notice.touch()
        assert _train(trainer, ckpt, 10, first=3) == 3 and ckpt.should_stop
        assert ckpt.manager.all_steps() == [1, 3]


def test_reserved_item_names_are_refused(tmp_path):
    with pytest.raises(ocp.CheckpointError, match=r"got 'state' in items=\['state'\].*rename"):
        attach(_trainer(), tmp_path, items={"state": dict})


def test_an_item_that_is_not_a_function_is_refused(tmp_path):
    with pytest.raises(ocp.CheckpointError, match=r"Expected items\['data'\] to be a function"
                                                  r".*got dict.*lambda: value"):
        attach(_trainer(), tmp_path, items={"data": {"index": 3}})


def test_a_config_that_is_not_a_config_dict_is_refused(tmp_path):
    with pytest.raises(ocp.CheckpointError, match=r"Expected config to be an "
                                                  r"ml_collections.ConfigDict or a dict, got list"):
        attach(_trainer(), tmp_path, config=["lr", 0.1])


def test_a_trainer_without_state_is_refused(tmp_path):
    with pytest.raises(ocp.CheckpointError, match=r"Expected a trainer with a `state`.*got "
                                                  r"object.*SimpleNamespace\(state=state\)"):
        attach(object(), tmp_path)


def test_any_pytree_state_round_trips(tmp_path):
    trainer = types.SimpleNamespace(state={"w": jax.numpy.arange(4.0), "count": 3})
    with attach(trainer, tmp_path) as ckpt:
        assert isinstance(ckpt, TrainingCheckpointer)
        ckpt.save(1, force=True)
    resumed = types.SimpleNamespace(state={"w": jax.numpy.zeros(4), "count": 0})
    with attach(resumed, tmp_path):
        pass
    assert resumed.state["count"] == 3
    np.testing.assert_array_equal(resumed.state["w"], np.arange(4.0))


_EXIT_WITHOUT_CLOSE = """
import sys, types
import jax.numpy as jnp
from jaxpoint.flax_adapter import attach
trainer = types.SimpleNamespace(state={"w": jnp.arange(1_000_000.0)})
ckpt = attach(trainer, sys.argv[1])
ckpt.on_step_end(1)  # async: returns once staged; the script ends without close()
"""


def test_interpreter_exit_waits_for_the_save_in_flight(tmp_path):
    done = subprocess.run([sys.executable, "-c", _EXIT_WITHOUT_CLOSE, str(tmp_path)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})

    assert done.returncode == 0, done.stderr
    restored = ocp.CheckpointManager(tmp_path).restore(1)
    np.testing.assert_array_equal(restored["state"]["w"], np.arange(1_000_000.0))
