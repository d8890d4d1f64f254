"""The emergency CheckpointManager in one process (8 virtual devices, 2 replicas of 4).

Policies per tier, JSON items in both tiers, restore rules, delete, reload, metrics and
best_step, item_metadata, the context manager, errors, and a SIGTERM preemption save.
Recovery across processes is in test_checkpoint_manager_processes.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import jax
import jaxpoint.core as ocp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpoint.core import emergency
from jaxpoint.core.errors import InvalidArgumentError, StepNotFoundError
from jaxpoint.core.manager import (
    FixedIntervalPolicy,
    LatestN,
    SpecificStepsPolicy,
    standard_name_format,
)
from jaxpoint.core.multihost import preemption


@pytest.fixture(scope="module")
def mesh() -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("replica", "model"))


def _state(mesh: jax.sharding.Mesh, step: int) -> dict[str, Any]:
    return {"w": jax.device_put(np.arange(32, dtype=np.float32).reshape(4, 8) + step,
                                NamedSharding(mesh, P(None, "model"))),
            "b": jax.device_put(np.full(4, step, np.int32), NamedSharding(mesh, P("model")))}


def _abstract(mesh: jax.sharding.Mesh) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        _state(mesh, 0))


def _args(mesh: jax.sharding.Mesh, step: int) -> ocp.args.Composite:
    return ocp.args.Composite(state=ocp.args.PyTreeSave(_state(mesh, step)),
                              data=ocp.args.JsonSave({"position": step * 10}))


def _options(local: int = 1, persistent: int = 3, **kwargs: Any) -> Any:
    return emergency.CheckpointManagerOptions(
        local=emergency.LocalCheckpointOptions(save_interval_steps=local, max_to_keep=2),
        persistent=emergency.PersistentCheckpointOptions(save_interval_steps=persistent),
        **kwargs)


def _manager(tmp_path: Path, mesh: jax.sharding.Mesh, **kwargs: Any) -> Any:
    options = kwargs.pop("options", None) or _options()
    return emergency.CheckpointManager(tmp_path / "local", tmp_path / "persistent", mesh,
                                       _abstract(mesh), options=options, **kwargs)


def _value(restored: Any) -> float:
    return float(np.asarray(restored.state["w"])[0, 0])


def test_each_tier_saves_by_its_own_policy_and_restore_takes_the_newest(tmp_path, mesh):
    with _manager(tmp_path, mesh, options=_options(local=2, persistent=3)) as manager:
        saved = [manager.save(step, args=_args(mesh, step)) for step in range(8)]
        manager.wait_until_finished()
        assert saved == [True, False, True, True, True, False, True, False]
        assert manager.persistent_steps() == [0, 3, 6]
        assert manager.local_steps() == [4, 6]  # max_to_keep=2
        assert manager.all_steps() == [0, 3, 4, 6] and manager.latest_step() == 6
        assert manager.should_save(8) and not manager.should_save(7)
        restored = manager.restore()
        assert _value(restored) == 6 and restored.data == {"position": 60}
        assert restored.state["w"].sharding == _abstract(mesh)["w"].sharding


def test_force_saves_both_tiers_and_items_come_from_the_same_step(tmp_path, mesh):
    with _manager(tmp_path, mesh, options=_options(local=5, persistent=100)) as manager:
        assert manager.save(0, args=_args(mesh, 0))  # the first save of each tier
        assert not manager.save(1, args=_args(mesh, 1))
        assert manager.save(2, args=_args(mesh, 2), force=True)
        manager.wait_until_finished()
        assert manager.local_steps() == [0, 2] and manager.persistent_steps() == [0, 2]
    shutil.rmtree(tmp_path / "local")
    with _manager(tmp_path, mesh) as manager:
        restored = manager.restore()  # no local folder left: the persistent tier
        assert _value(restored) == 2 and restored.data == {"position": 20}
        only_data = manager.restore(0, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        assert only_data.data == {"position": 0} and _value(only_data) == 0


def test_wiped_local_tier_falls_back_to_persistent_and_a_new_run_resaves(tmp_path, mesh,
                                                                         caplog):
    with _manager(tmp_path, mesh) as manager:
        for step in range(5):
            manager.save(step, args=_args(mesh, step))
    shutil.rmtree(tmp_path / "local")
    with _manager(tmp_path, mesh) as manager, caplog.at_level(logging.INFO):
        assert _value(manager.restore()) == 3
        assert "newest persistent step 3" in caplog.text
        assert manager.save(4, args=_args(mesh, 4))  # step 4 again: the old future is gone


@pytest.mark.parametrize("single_host", [True, False], ids=["single_replica", "every_process"])
def test_persistent_restore_reads_the_same_either_way(tmp_path, mesh, single_host):
    options = _options(single_host_load_and_broadcast=single_host)
    with _manager(tmp_path, mesh, options=options) as manager:
        manager.save(0, args=_args(mesh, 7))
    shutil.rmtree(tmp_path / "local")
    with _manager(tmp_path, mesh, options=options) as manager:
        restored = manager.restore()
        np.testing.assert_array_equal(restored.state["w"], _state(mesh, 7)["w"])
        np.testing.assert_array_equal(restored.state["b"], _state(mesh, 7)["b"])


def test_delete_reload_metrics_best_step_and_item_metadata(tmp_path, mesh):
    options = emergency.CheckpointManagerOptions(
        local=emergency.LocalCheckpointOptions(save_interval_steps=1, max_to_keep=5),
        persistent=emergency.PersistentCheckpointOptions(
            save_interval_steps=1, best_fn=lambda m: m["loss"], best_mode="min"),
        enable_async_checkpointing=False)
    with _manager(tmp_path, mesh, options=options) as manager:
        for step, loss in enumerate([3.0, 1.0, 2.0]):
            manager.save(step, args=_args(mesh, step), metrics={"loss": loss})
        assert manager.best_step() == 1 and manager.metrics(2) == {"loss": 2.0}
        metadata = manager.item_metadata(1)
        assert metadata.state["w"].shape == (4, 8) and "data" in metadata
        manager.delete(1)
        assert manager.all_steps() == [0, 2] and manager.best_step() == 2
        with pytest.raises(StepNotFoundError, match="Expected step 1 in"):
            manager.delete(1)
    with _manager(tmp_path, mesh, options=options) as other:
        other.reload()
        assert other.persistent_steps() == [0, 2]


def test_local_preservation_policy_and_should_save_fn(tmp_path, mesh):
    options = emergency.CheckpointManagerOptions(
        local=emergency.LocalCheckpointOptions(should_save_fn=lambda step, last: step % 3 == 1,
                                               preservation_policy=LatestN(1)),
        persistent=emergency.PersistentCheckpointOptions(save_interval_steps=1000))
    with _manager(tmp_path, mesh, options=options) as manager:
        for step in range(8):
            manager.save(step, args=_args(mesh, step))
        manager.wait_until_finished()
        assert manager.local_steps() == [7] and manager.persistent_steps() == [0]


def test_orbax_style_paths_and_context_manager(tmp_path, mesh):
    from jaxpoint.core.experimental.emergency import checkpoint_manager  # orbax's import line

    module = ocp.experimental.emergency.checkpoint_manager
    assert module is checkpoint_manager
    assert module.CheckpointManager is emergency.CheckpointManager
    assert module.CheckpointManagerOptions is emergency.CheckpointManagerOptions
    manager = module.CheckpointManager(tmp_path / "l", tmp_path / "p", mesh, _abstract(mesh))
    with manager:
        assert manager.in_primary_slice and manager.directory.path == str(tmp_path / "p")
        manager.save(0, args=_args(mesh, 0))
    assert manager._is_closed  # closed by the with block
    manager.close()  # idempotent


def test_errors_say_what_is_supported(tmp_path, mesh):
    with _manager(tmp_path, mesh) as manager:
        with pytest.raises(StepNotFoundError, match="no local step can be rebuilt.*persistent"):
            manager.restore()
        with pytest.raises(InvalidArgumentError, match="Composite\\(state=PyTreeSave"):
            manager.save(0, args=ocp.args.PyTreeSave(_state(mesh, 0)))
        with pytest.raises(InvalidArgumentError, match="JsonSave.*got ArraySave for item 'x'"):
            manager.save(0, args=ocp.args.Composite(state=ocp.args.PyTreeSave(_state(mesh, 0)),
                                                    x=ocp.args.ArraySave(np.ones(2))))
        with pytest.raises(InvalidArgumentError, match="'default' in save.*reserved"):
            manager.save(0, args=ocp.args.Composite(state=ocp.args.PyTreeSave(_state(mesh, 0)),
                                                    default=ocp.args.JsonSave(1)))
        manager.save(0, args=_args(mesh, 0))
        with pytest.raises(StepNotFoundError, match="Expected step 5 to be restorable"):
            manager.restore(5)
    with pytest.raises(InvalidArgumentError, match="item_handlers only with"):
        _manager(tmp_path, mesh, item_handlers=ocp.JsonCheckpointHandler())
    with pytest.raises(InvalidArgumentError, match="replica_axis_index to be an int"):
        emergency.CheckpointManagerOptions(replica_axis_index=-1)
    with pytest.raises(InvalidArgumentError, match="coordination_timeout_secs > 0"):
        emergency.MultiprocessingOptions(coordination_timeout_secs=0)
    with pytest.raises(InvalidArgumentError, match="max_to_keep"):
        emergency.LocalCheckpointOptions(max_to_keep=0)


@pytest.mark.parametrize("custom_policy", [False, True], ids=["interval", "custom_policy"])
def test_sigterm_saves_locally_at_once_and_reached_preemption_stops_the_loop(tmp_path, mesh,
                                                                             custom_policy):
    local = emergency.LocalCheckpointOptions(
        save_decision_policy=FixedIntervalPolicy(100) if custom_policy else None,
        save_interval_steps=100, max_to_keep=2)  # a custom policy knows nothing of preemption
    options = emergency.CheckpointManagerOptions(
        local=local, persistent=emergency.PersistentCheckpointOptions(save_interval_steps=1000))
    preemption.reset_preemption_handler()
    try:
        with _manager(tmp_path, mesh, options=options) as manager:
            manager.save(0, args=_args(mesh, 0))
            stopped_at = None
            for step in range(1, 10):
                if step == 4:  # only into jaxpoint's handler, which the manager installed
                    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
                    os.kill(os.getpid(), signal.SIGTERM)
                assert manager.save(step, args=_args(mesh, step)) == (step == 4)
                if manager.reached_preemption(step):
                    stopped_at = step
                    break
            assert stopped_at == 4
            assert manager.local_steps() == [0, 4]  # 4 committed before save returned
    finally:
        preemption.reset_preemption_handler()


def test_the_other_options_take_effect(tmp_path, mesh):
    (tmp_path / "persistent").mkdir()
    (tmp_path / "persistent" / "step_9.orbax-checkpoint-tmp-1").mkdir()  # a killed save
    options = emergency.CheckpointManagerOptions(
        local=emergency.LocalCheckpointOptions(save_decision_policy=SpecificStepsPolicy([1, 3])),
        persistent=emergency.PersistentCheckpointOptions(
            should_save_fn=lambda step, last: step in (0, 2, 3, 5), max_to_keep=1,
            keep_period=2),
        step_name_format=standard_name_format(step_prefix="step"), cleanup_tmp_directories=True,
        async_options=ocp.AsyncOptions(timeout_secs=60),
        multiprocessing_options=emergency.MultiprocessingOptions(coordination_timeout_secs=30))
    with _manager(tmp_path, mesh, options=options) as manager:
        assert not (tmp_path / "persistent" / "step_9.orbax-checkpoint-tmp-1").exists()
        for step in range(7):
            manager.save(step, args=_args(mesh, step))
        manager.wait_until_finished()
        assert manager.local_steps() == [3] and manager.persistent_steps() == [0, 2, 5]
        assert (tmp_path / "local" / "step_3").is_dir()
        assert (tmp_path / "persistent" / "step_5" / "default").is_dir()
    persistent_policy = emergency.CheckpointManagerOptions(
        persistent=emergency.PersistentCheckpointOptions(
            save_decision_policy=FixedIntervalPolicy(2), preservation_policy=LatestN(1)),
        enable_async_checkpointing=False)
    with _manager(tmp_path / "b", mesh, options=persistent_policy) as manager:
        for step in range(5):
            manager.save(step, args=_args(mesh, step))
        assert manager.persistent_steps() == [4]
    with pytest.raises(InvalidArgumentError, match="async_options only with"):
        _manager(tmp_path / "c", mesh, options=emergency.CheckpointManagerOptions(
            async_options=ocp.AsyncOptions(), enable_async_checkpointing=False))
    with pytest.raises(InvalidArgumentError, match="multiprocessing_options to be"):
        emergency.CheckpointManagerOptions(multiprocessing_options=ocp.MultiprocessingOptions())


def test_another_mesh_falls_back_to_the_persistent_tier_with_a_log_line(tmp_path, mesh, caplog):
    with _manager(tmp_path, mesh) as manager:  # local every step, persistent every 3
        for step in range(5):
            manager.save(step, args=_args(mesh, step))
    four_replicas = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2),
                                      ("replica", "model"))
    with _manager(tmp_path, four_replicas) as manager, caplog.at_level(logging.INFO):
        restored = manager.restore()
        assert _value(restored) == 3 and restored.data == {"position": 30}
        assert restored.state["w"].sharding == _abstract(four_replicas)["w"].sharding
        assert "persistent step 3" in caplog.text


def test_dataset_item_goes_to_the_non_replicated_directory(tmp_path, mesh):
    dataset_dir = tmp_path / "dataset"
    with _manager(tmp_path, mesh, item_handlers=ocp.JsonCheckpointHandler(),
                  persistent_non_replicated_directory=dataset_dir) as manager:
        for step in range(4):  # persistent: 0 and 3
            manager.save(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeSave(_state(mesh, step)),
                dataset=ocp.args.JsonSave({"shard_position": step})))
        manager.wait_until_finished()
        assert sorted(int(p.name) for p in dataset_dir.iterdir() if p.name.isdigit()) == [0, 3]
        restored = manager.restore(3, args=ocp.args.Composite(dataset=ocp.args.JsonRestore()))
        assert restored.dataset == {"shard_position": 3} and _value(restored) == 3
