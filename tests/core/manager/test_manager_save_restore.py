"""CheckpointManager: saving, listing, restoring, metadata and every bad-input error."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.manager.gate_handler import GateHandler, GateSave
from core.manager.manager_support import restored_step, save_steps, step_folders, sync_options, tree
from jaxpoint.core import AsyncOptions, args
from jaxpoint.core.errors import (
    BackgroundSaveError,
    CheckpointNotFoundError,
    InvalidArgumentError,
    ReadOnlyError,
    StepAlreadyExistsError,
    StepNotFoundError,
)
from jaxpoint.core.handlers import JsonCheckpointHandler, StandardCheckpointHandler
from jaxpoint.core.manager import (
    CheckpointManager,
    CheckpointManagerOptions,
    ContinuousCheckpointingPolicy,
    RootMetadata,
    composite_name_format,
    standard_name_format,
)


def test_single_item_saves_asynchronously_under_default(tmp_path: Path) -> None:
    state = {"w": jnp.arange(8.0).reshape(2, 4), "b": np.ones(3, np.int32)}
    with CheckpointManager(tmp_path) as manager:
        assert manager.save(0, args=args.StandardSave(state))
        manager.wait_until_finished()
        assert manager.all_steps() == [0]
        names = {p.name for p in (tmp_path / "0").iterdir()}
        assert {"_CHECKPOINT_METADATA", "commit_success.txt", "default"} <= names
        assert [p.name for p in (tmp_path / "0").iterdir() if p.is_dir()] == ["default"]
        restored = manager.restore(0)
    assert isinstance(restored["w"], jax.Array)
    np.testing.assert_array_equal(restored["w"], state["w"])
    np.testing.assert_array_equal(restored["b"], state["b"])


def test_restore_onto_a_target(tmp_path: Path) -> None:
    state = {"w": jnp.ones((4, 2), jnp.float32)}
    with CheckpointManager(tmp_path, sync_options()) as manager:
        manager.save(3, args=args.StandardSave(state))
        target = {"w": jax.ShapeDtypeStruct((4, 2), jnp.float32,
                                            sharding=jax.sharding.SingleDeviceSharding(jax.devices()[1]))}
        restored = manager.restore(3, args=args.StandardRestore(target))
    assert restored["w"].sharding == target["w"].sharding


def test_named_items_round_trip_with_and_without_args(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(), item_names=("state", "config")) as manager:
        manager.save(5, args=args.Composite(state=args.StandardSave(tree(5)),
                                            config=args.JsonSave({"lr": 0.1})))
    with CheckpointManager(tmp_path, sync_options(read_only=True)) as reader:
        everything = reader.restore()
        assert sorted(everything) == ["config", "state"]
        assert everything["config"] == {"lr": 0.1}
        assert int(everything.state["step"]) == 5
        only_config = reader.restore(5, args=args.Composite(config=None))
        assert list(only_config) == ["config"]


def test_item_handlers_are_used_for_save_and_restore(tmp_path: Path) -> None:
    handlers = {"state": StandardCheckpointHandler(), "notes": JsonCheckpointHandler(filename="n")}
    with CheckpointManager(tmp_path, sync_options(), item_handlers=handlers) as manager:
        manager.save(1, args=args.Composite(state=args.StandardSave(tree(1)),
                                            notes=args.JsonSave(["a"])))
        assert (tmp_path / "1" / "notes" / "n").is_file()
        assert manager.restore(1, args=args.Composite(notes=None))["notes"] == ["a"]
    with CheckpointManager(tmp_path, sync_options(), item_handlers=GateHandler()) as single:
        single.save(2, args=GateSave({"v": 2}), force=True)
        assert single.restore(2) == {"v": 2}


def test_steps_are_plain_ints(tmp_path: Path) -> None:
    options = sync_options(best_fn=lambda m: m["loss"], best_mode="min")
    with CheckpointManager(tmp_path, options) as manager:
        manager.save(np.int64(4), args=args.StandardSave(tree(4)), metrics={"loss": np.float32(0.5)})
        manager.save(jnp.int32(6), args=args.StandardSave(tree(6)), metrics={"loss": jnp.array(0.25)})
        values = [*manager.all_steps(), manager.latest_step(), manager.best_step()]
        assert values == [4, 6, 6, 6] and all(type(v) is int for v in values)
        assert json.dumps(manager.metrics(6)) == '{"loss": 0.25}'


def test_should_save_follows_the_interval_and_never_goes_back(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(save_interval_steps=5)) as manager:
        assert manager.should_save(3)  # the first save of an empty run
        saved = [s for s in range(13) if manager.save(s, args=args.StandardSave(tree(s)))]
        assert saved == [0, 5, 10]
        assert not manager.should_save(10) and not manager.should_save(7)
        assert manager.should_save(15)


def test_save_on_steps_and_should_save_fn(tmp_path: Path) -> None:
    listed = sync_options(save_interval_steps=None, save_on_steps={2, 9})
    with CheckpointManager(tmp_path / "listed", listed) as manager:
        assert [s for s in range(1, 12) if manager.save(s, args=args.StandardSave(tree(s)))] == [1, 2, 9]

    def gap_of_three(step: int, last: int | None) -> bool:
        return last is None or step - last >= 3

    with CheckpointManager(tmp_path / "fn", sync_options(should_save_fn=gap_of_three)) as manager:
        assert [s for s in range(8) if manager.save(s, args=args.StandardSave(tree(s)))] == [0, 3, 6]


def test_force_saves_off_the_interval(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(save_interval_steps=100)) as manager:
        save_steps(manager, [0])
        assert not manager.save(7, args=args.StandardSave(tree(7)))
        assert manager.save(7, args=args.StandardSave(tree(7)), force=True)
        assert manager.all_steps() == [0, 7]


def test_an_existing_step_is_never_overwritten(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [1, 2])
        for force in (False, True):
            with pytest.raises(StepAlreadyExistsError,
                               match=r"Step 2 already exists at .*2\. To fix, save a new step, or call delete\(2\)"):
                manager.save(2, args=args.StandardSave(tree(99)), force=force)
        manager.delete(2)
        assert manager.save(2, args=args.StandardSave(tree(22)), force=True)
        assert int(manager.restore(2)["w"][0, 0]) == 22


def test_a_step_saved_by_another_manager_also_exists(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as first, \
            CheckpointManager(tmp_path, sync_options()) as second:
        save_steps(first, [4])
        with pytest.raises(StepAlreadyExistsError, match="Step 4 already exists"):
            second.save(4, args=args.StandardSave(tree(4)))
        assert restored_step(second, 4) == 4  # readable before reload()
        second.reload()
        assert second.all_steps() == [4]


def test_restoring_a_missing_step_lists_the_steps_there_are(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        with pytest.raises(StepNotFoundError, match=r"Expected a step to restore in .*, found none"):
            manager.restore()
        save_steps(manager, [1, 3])
        with pytest.raises(StepNotFoundError, match=r"Expected step 2 in .*, found only steps \[1, 3\]"):
            manager.restore(2)
        with pytest.raises(StepNotFoundError, match=r"Expected step 2 .* found only steps \[1, 3\]"):
            manager.delete(2)
        with pytest.raises(StepNotFoundError, match="Expected step 8"):
            manager.metrics(8)


def test_unknown_and_missing_item_names(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(), item_names=("state",)) as manager:
        with pytest.raises(InvalidArgumentError,
                           match=r"Unknown item name\(s\) \['extra'\] in save\(step=1\); this manager was built with items \['state'\]"):
            manager.save(1, args=args.Composite(state=args.StandardSave(tree(1)),
                                                extra=args.JsonSave({})))
        manager.save(1, args=args.Composite(state=args.StandardSave(tree(1))))
        with pytest.raises(InvalidArgumentError, match=r"Unknown item name\(s\) \['other'\] in restore\(step=1\)"):
            manager.restore(1, args=args.Composite(other=None))
    with CheckpointManager(tmp_path, sync_options(read_only=True)) as reader:
        with pytest.raises(CheckpointNotFoundError,
                           match=r"Expected item\(s\) \['other'\] in step 1 .* found only items \['state'\]"):
            reader.restore(1, args=args.Composite(other=None))


def test_single_and_named_item_args_must_not_be_mixed(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path / "one", sync_options()) as single:
        save_steps(single, [0])
        with pytest.raises(InvalidArgumentError, match="args for the single unnamed item .* got args.Composite"):
            single.save(1, args=args.Composite(state=args.StandardSave(tree(1))))
    with CheckpointManager(tmp_path / "many", sync_options(), item_names=["state"]) as named:
        with pytest.raises(InvalidArgumentError, match=r"Expected args.Composite\(<item>=...\) in save\(step=0\)"):
            named.save(0, args=args.StandardSave(tree(0)))


@pytest.mark.parametrize(("call", "match"), [
    (lambda m: m.save(0), r"Expected args to be a CheckpointArgs object in save\(step=0\), got NoneType"),
    (lambda m: m.save(0, args={"w": 1}), "got dict. To fix, pass args=ocp.args.StandardSave"),
    (lambda m: m.save(-1, args=args.StandardSave(tree(0))), "Expected the step to be an int >= 0, got -1"),
    (lambda m: m.save(1.5, args=args.StandardSave(tree(0))), "Expected the step to be an int >= 0, got 1.5"),
    (lambda m: m.save(True, args=args.StandardSave(tree(0))), "got True of type bool"),
    (lambda m: m.save(0, args=args.StandardSave(tree(0)), metrics=[0.1]),
     "Expected metrics for step 0 to be a dict, got list"),
    (lambda m: m.save(0, args=args.StandardSave(tree(0)), metrics={"loss": object()}),
     "Expected metrics for step 0 to hold numbers, strings, lists or dicts"),
    (lambda m: m.save(0, args=args.StandardSave(tree(0)), custom_metadata={"a": {1, 2}}),
     "Expected custom_metadata to hold only JSON values"),
    (lambda m: m.restore(7, args=tree(0)), "Expected args to be a CheckpointArgs object or None"),
])
def test_bad_save_and_restore_arguments(tmp_path: Path, call, match) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [7])  # so that restore has a step and save(0) is not the first
        with pytest.raises(InvalidArgumentError, match=match):
            call(manager)
        assert manager.all_steps() == [7]


def test_metrics_item_name_is_reserved(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        with pytest.raises(InvalidArgumentError, match="Item name 'metrics' in save.step=0. is reserved"):
            manager.save(0, args=args.Composite(metrics=args.JsonSave({})), metrics={"loss": 1.0})


def test_read_only_manager_lists_and_restores_but_refuses_writes(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as writer:
        save_steps(writer, [1])
    with CheckpointManager(tmp_path, sync_options(read_only=True, max_to_keep=1)) as reader:
        assert reader.all_steps() == [1] and restored_step(reader) == 1
        assert not reader.should_save(2)
        with pytest.raises(ReadOnlyError, match=r"Cannot save step 2: the manager of .* read_only=True"):
            reader.save(2, args=args.StandardSave(tree(2)), force=True)
        with pytest.raises(ReadOnlyError, match="Cannot delete step 1"):
            reader.delete(1)
    with pytest.raises(ReadOnlyError, match="metadata= asks to write root metadata"):
        CheckpointManager(tmp_path, sync_options(read_only=True), metadata={"a": 1})
    assert not (tmp_path / "metadata").exists()
    with CheckpointManager(tmp_path / "never-created", sync_options(read_only=True)) as empty:
        assert empty.all_steps() == []
    assert not (tmp_path / "never-created").exists()


def test_bad_directories_and_constructor_arguments(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InvalidArgumentError, match=r"Expected a folder for the checkpoint directory, found a file at .*file"):
        CheckpointManager(tmp_path / "file")
    with pytest.raises(InvalidArgumentError, match="to exist because create=False"):
        CheckpointManager(tmp_path / "missing", sync_options(create=False))
    with pytest.raises(InvalidArgumentError, match=r"Expected the second argument of CheckpointManager to be CheckpointManagerOptions, or Orbax's legacy checkpointers .* got StandardCheckpointHandler. To fix, pass item_handlers=StandardCheckpointHandler\(...\) by keyword"):
        CheckpointManager(tmp_path, StandardCheckpointHandler())
    with pytest.raises(InvalidArgumentError, match="Expected item_handlers to be a dict"):
        CheckpointManager(tmp_path, item_names=["a"], item_handlers=StandardCheckpointHandler())
    with pytest.raises(InvalidArgumentError, match=r"Expected item_names to be a sequence of names, got the str 'state'"):
        CheckpointManager(tmp_path, item_names="state")
    with pytest.raises(InvalidArgumentError, match="Expected metadata= to be a dict, got list"):
        CheckpointManager(tmp_path, metadata=[1])
    assert CheckpointManager(tmp_path / "made", sync_options()).directory.exists()


def test_metadata_metrics_and_item_metadata(tmp_path: Path) -> None:
    options = sync_options(best_fn=lambda m: m["loss"], best_mode="min")
    with CheckpointManager(tmp_path, options, item_names=("state", "config"),
                           metadata={"model": "mlp", "layers": [4, 2]}) as manager:
        manager.save(3, args=args.Composite(state=args.StandardSave(tree(3)),
                                            config=args.JsonSave({"lr": 1})),
                     metrics={"loss": 0.5, "extra": {"acc": [1, 2]}}, custom_metadata={"git": "abc"})
        assert manager.metadata() == RootMetadata(custom_metadata={"model": "mlp", "layers": [4, 2]})
        step = manager.metadata(3)
        assert step.custom_metadata == {"git": "abc"}
        assert step.metrics == {"loss": 0.5, "extra": {"acc": [1, 2]}} == manager.metrics(3)
        assert set(step.item_handlers) == {"state", "config", "metrics"}
        assert step.commit_timestamp_nsecs >= step.init_timestamp_nsecs
        items = manager.item_metadata(3)
        assert items["state"]["w"].shape == (2, 3) and items["config"] is None
    with CheckpointManager(tmp_path, sync_options(), metadata={"model": "other"}) as again:
        assert again.metadata().custom_metadata["model"] == "mlp"  # the first run's, kept
    with CheckpointManager(tmp_path / "single", sync_options()) as single:
        save_steps(single, [0])
        assert single.item_metadata(0)["w"].dtype == np.float32
        assert single.metrics(0) is None and single.metadata(0).metrics == {}


def test_delete_and_reload(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [1, 2, 3])
        manager.delete(2)
        assert manager.all_steps() == [1, 3] and step_folders(tmp_path) == ["1", "3"]
        (tmp_path / "3").rename(tmp_path / "30")  # another tool changed the directory
        assert manager.all_steps() == [1, 3]
        assert manager.all_steps(read=True) == [1, 30]


def test_a_failed_background_save_is_raised_and_keeps_older_steps(tmp_path: Path) -> None:
    options = CheckpointManagerOptions(max_to_keep=1)
    manager = CheckpointManager(tmp_path, options, item_handlers=GateHandler())
    manager.save(1, args=GateSave({"v": 1}))
    manager.wait_until_finished()
    manager.save(2, args=GateSave({"v": 2}, fail_with="No space left on device"))
    with pytest.raises(BackgroundSaveError,
                       match=r"asynchronous save of step 2 under .* failed: .*No space left on device"):
        manager.wait_until_finished()
    assert manager.all_steps() == [1] and step_folders(tmp_path) == ["1"]
    manager.check_for_errors()  # raised once only
    assert manager.save(3, args=GateSave({"v": 3}))
    manager.close()
    assert step_folders(tmp_path) == ["3"]


def test_async_save_in_progress_and_restore_waits_for_it(tmp_path: Path) -> None:
    gate = threading.Event()
    with CheckpointManager(tmp_path, item_handlers=GateHandler()) as manager:
        manager.save(1, args=GateSave({"v": 1}, wait_for=gate))
        assert manager.is_saving_in_progress() and manager.all_steps() == [1]
        [in_flight] = step_folders(tmp_path)
        assert in_flight.startswith("1.orbax-checkpoint-tmp-")
        threading.Timer(0.2, gate.set).start()
        assert manager.restore(1) == {"v": 1}
        assert not manager.is_saving_in_progress()


def test_close_is_idempotent_and_waits(tmp_path: Path) -> None:
    gate = threading.Event()
    manager = CheckpointManager(tmp_path, item_handlers=GateHandler())
    manager.save(0, args=GateSave([0], wait_for=gate))
    threading.Timer(0.2, gate.set).start()
    manager.close()
    manager.close()
    assert step_folders(tmp_path) == ["0"]


def test_step_name_format_moves_a_run_to_new_names(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as old:
        save_steps(old, [1, 2])
    new = standard_name_format(step_prefix="ckpt", step_format_fixed_length=4)
    options = sync_options(step_name_format=composite_name_format(new, [new, standard_name_format()]),
                           max_to_keep=2)
    with CheckpointManager(tmp_path, options) as migrated:
        assert migrated.all_steps() == [1, 2] and restored_step(migrated, 1) == 1
        save_steps(migrated, [3])
        assert migrated.all_steps() == [2, 3]
    assert step_folders(tmp_path) == ["2", "ckpt_0003"]


def test_save_root_metadata_false_writes_none(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(save_root_metadata=False),
                           metadata={"model": "mlp"}) as manager:
        assert manager.metadata() == RootMetadata()
    assert not (tmp_path / "metadata").exists()


def test_async_options_timeout_fails_the_save_it_cuts_short(tmp_path: Path) -> None:
    gate = threading.Event()
    options = CheckpointManagerOptions(async_options=AsyncOptions(timeout_secs=0.2))
    manager = CheckpointManager(tmp_path, options, item_handlers=GateHandler())
    manager.save(1, args=GateSave({"v": 1}, wait_for=gate))
    with pytest.raises(BackgroundSaveError, match=r"step 1 .* did not finish within timeout_secs=0.2"):
        manager.wait_until_finished()
    gate.set()
    manager.close()


def test_continuous_checkpointing_saves_whenever_no_save_is_in_flight(tmp_path: Path) -> None:
    gate = threading.Event()
    options = CheckpointManagerOptions(save_interval_steps=None,
                                       save_decision_policy=ContinuousCheckpointingPolicy())
    with CheckpointManager(tmp_path, options, item_handlers=GateHandler()) as manager:
        assert manager.save(1, args=GateSave({"v": 1}, wait_for=gate))
        assert not manager.save(2, args=GateSave({"v": 2}))  # step 1 is still being written
        gate.set()
        manager.wait_until_finished()
        assert manager.save(3, args=GateSave({"v": 3}))
        manager.wait_until_finished()
        assert manager.all_steps() == [1, 3]
