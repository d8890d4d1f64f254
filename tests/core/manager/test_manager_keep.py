"""Which steps the manager keeps: max_to_keep, best_fn, keep_period, keep_time_interval,
custom policies, background deletion, todelete_subdir and object stores."""

from __future__ import annotations

import contextlib
import datetime
import time
from pathlib import Path

import pytest
from core.manager.manager_support import restored_step, save_steps, step_folders, sync_options, tree
from jaxpoint.core import args
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.manager import (
    AnyPreservationPolicy,
    CheckpointManager,
    CheckpointManagerOptions,
    CustomSteps,
    FixedIntervalPolicy,
    LatestN,
    hold_read_lease,
)
from jaxpoint.core.storage import COMMIT_MARKER, Location

LOSSES = {1: 0.9, 2: 0.2, 3: 0.7, 4: 0.4, 5: 0.3, 6: 0.8, 7: 0.5, 8: 0.6}


@pytest.mark.parametrize("is_async", [False, True])
def test_max_to_keep_keeps_the_newest(tmp_path: Path, is_async: bool) -> None:
    options = CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=is_async)
    with CheckpointManager(tmp_path, options) as manager:
        save_steps(manager, [1, 2, 3, 4])
        assert manager.all_steps() == [3, 4]
    assert step_folders(tmp_path) == ["3", "4"]


@pytest.mark.parametrize(("mode", "kept", "best"), [("min", [2, 5], 2), ("max", [1, 6], 1)])
def test_best_fn_keeps_the_best(tmp_path: Path, mode: str, kept: list[int], best: int) -> None:
    options = sync_options(max_to_keep=2, best_fn=lambda m: m["loss"], best_mode=mode)
    with CheckpointManager(tmp_path, options) as manager:
        save_steps(manager, [1, 2, 3, 4, 5, 6], losses=LOSSES)
        assert manager.all_steps() == kept and manager.best_step() == best
        assert manager.latest_step() == kept[-1]
    with CheckpointManager(tmp_path, sync_options(best_fn=lambda m: m["loss"], best_mode=mode)) as again:
        assert again.best_step() == best  # ranked again from the saved metrics


def test_best_step_ties_go_to_the_later_step(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(best_fn=lambda m: m["loss"], best_mode="min")) as manager:
        save_steps(manager, [1, 2, 3], losses={1: 0.5, 2: 0.1, 3: 0.1})
        assert manager.best_step() == 3


def test_keep_period_with_best_n(tmp_path: Path) -> None:
    options = sync_options(max_to_keep=1, keep_period=4, best_fn=lambda m: m["loss"],
                           best_mode="min")
    with CheckpointManager(tmp_path, options) as manager:
        save_steps(manager, list(range(1, 9)), losses=LOSSES)
        assert manager.all_steps() == [2, 4, 8]  # best (0.2) plus every 4th step
        assert manager.best_step() == 2


def test_keep_checkpoints_without_metrics(tmp_path: Path) -> None:
    for keep, expected in ((True, [1, 2, 4]), (False, [4])):
        directory = tmp_path / str(keep)
        with CheckpointManager(directory, sync_options()) as plain:
            save_steps(plain, [1, 2])  # no best_fn yet, so no metrics
        options = sync_options(max_to_keep=1, best_fn=lambda m: m["loss"], best_mode="min",
                               keep_checkpoints_without_metrics=keep)
        with CheckpointManager(directory, options) as ranked:
            assert ranked.best_step() is None
            save_steps(ranked, [3, 4], losses={3: 0.5, 4: 0.1})
            assert ranked.all_steps() == expected and ranked.best_step() == 4


def test_max_to_keep_with_keep_time_interval(tmp_path: Path) -> None:
    options = sync_options(max_to_keep=1, keep_time_interval=datetime.timedelta(seconds=1))
    with CheckpointManager(tmp_path, options) as manager:
        save_steps(manager, [0, 1])
        time.sleep(1.2)
        save_steps(manager, [2, 3])
        assert manager.all_steps() == [0, 2, 3]  # one per second, plus the newest
    with CheckpointManager(tmp_path, options) as reopened:  # times come from the files
        save_steps(reopened, [4])
        assert reopened.all_steps() == [0, 2, 4]
    assert step_folders(tmp_path) == ["0", "2", "4"]


def test_custom_policies_compose(tmp_path: Path) -> None:
    options = CheckpointManagerOptions(
        enable_async_checkpointing=False, save_decision_policy=FixedIntervalPolicy(3),
        preservation_policy=AnyPreservationPolicy([LatestN(1), CustomSteps({3})]))
    with CheckpointManager(tmp_path, options) as manager:
        saved = [s for s in range(1, 11) if manager.save(s, args=args.StandardSave(tree(s)))]
        assert saved == [3, 6, 9]  # no InitialSavePolicy in this custom policy
        assert manager.all_steps() == [3, 9]


def test_background_delete_finishes_before_close_returns(tmp_path: Path) -> None:
    options = CheckpointManagerOptions(max_to_keep=1, enable_background_delete=True)
    manager = CheckpointManager(tmp_path, options)
    save_steps(manager, [1, 2, 3, 4, 5])
    assert manager.all_steps() == [5]
    manager.close()
    assert step_folders(tmp_path) == ["5"]


def test_todelete_subdir_moves_instead_of_deleting(tmp_path: Path) -> None:
    options = sync_options(max_to_keep=1, todelete_subdir="trash", step_prefix="ckpt")
    with CheckpointManager(tmp_path, options) as manager:
        save_steps(manager, [1, 2, 3])
        assert manager.all_steps() == [3]
    assert step_folders(tmp_path) == ["ckpt_3", "trash"]
    assert sorted(p.name for p in (tmp_path / "trash").iterdir()) == ["ckpt_1", "ckpt_2"]
    with CheckpointManager(tmp_path, sync_options(step_prefix="ckpt")) as reader:
        assert reader.all_steps() == [3]


def test_todelete_subdir_needs_renames() -> None:
    with pytest.raises(InvalidArgumentError, match="todelete_subdir='trash', but memory://.* has no atomic rename"):
        CheckpointManager("memory://keep-test/trash", sync_options(todelete_subdir="trash"))


def test_object_store_commits_and_deletes_by_marker() -> None:
    root = Location.parse("memory://keep-test/run")
    with CheckpointManager(root, CheckpointManagerOptions(max_to_keep=2)) as manager:
        save_steps(manager, [1, 2, 3])
        assert manager.all_steps() == [2, 3]
        assert restored_step(manager, 2) == 2
    assert root.list_names() == ["2", "3"]  # deletion markers are gone; no empty folders
    assert (root / "3" / COMMIT_MARKER).exists() and not (root / "1").exists()
    root.remove()


def test_a_step_being_read_is_deleted_after_its_lease_ends(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(max_to_keep=1)) as manager:
        save_steps(manager, [1])
        with hold_read_lease(tmp_path, 1):
            save_steps(manager, [2, 3])
            assert manager.all_steps() == [3]
            assert step_folders(tmp_path) == ["1", "3"]  # 1 is read elsewhere: kept for now
            manager.reload()
            assert manager.all_steps() == [3]  # still scheduled for deletion
        save_steps(manager, [4])
        assert step_folders(tmp_path) == ["4"]


def test_close_deletes_a_step_whose_lease_ended(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, sync_options(max_to_keep=1))
    save_steps(manager, [1])
    with hold_read_lease(tmp_path, 1):
        save_steps(manager, [2])
    manager.close()
    assert step_folders(tmp_path) == ["2"]


def test_a_step_still_held_at_close_stays_for_a_later_run(tmp_path: Path) -> None:
    with contextlib.ExitStack() as reader:
        with CheckpointManager(tmp_path, sync_options(max_to_keep=1)) as manager:
            save_steps(manager, [1])
            reader.enter_context(hold_read_lease(tmp_path, 1))
            save_steps(manager, [2])
        assert step_folders(tmp_path) == ["1", "2"]
    with CheckpointManager(tmp_path, sync_options(max_to_keep=1)) as later:
        assert later.all_steps() == [1, 2]  # the directory is the truth
        save_steps(later, [3])
    assert step_folders(tmp_path) == ["3"]
