"""A damaged or half-made entry among good steps never blocks the directory, is never a
step and is never deleted; deletion and cleanup tolerate other actors (issue 13, 2-6)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from core.manager.manager_support import restored_step, save_steps, step_folders, sync_options
from jaxpoint.core import args
from jaxpoint.core.errors import StepAlreadyExistsError, StepNotFoundError
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions

_EMPTY_OR_PARTIAL = "it is empty or partial: it holds neither commit_success.txt nor " \
                    "_CHECKPOINT_METADATA"


def _damage(directory: Path) -> None:
    """Steps 1, 2 and 4 are good; 3, 5, 6, 7 and 9 are named like steps but are not."""
    (directory / "2" / "_CHECKPOINT_METADATA").write_bytes(b"\x00garbage{")
    (directory / "3").symlink_to(directory / "3")  # a loop
    (directory / "5").mkdir()  # empty
    (directory / "6" / "default").mkdir(parents=True)  # partial: no marker, no metadata
    (directory / "7").write_text("a file")
    (directory / "9").mkdir()  # a newer empty folder must never become the latest step


def test_a_damaged_step_never_blocks_the_directory(tmp_path: Path, caplog) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [1, 2, 4])
    _damage(tmp_path)
    caplog.set_level(logging.WARNING, logger="jaxpoint.core.manager.step_catalog")
    for options in (sync_options(), CheckpointManagerOptions(read_only=True)):
        with CheckpointManager(tmp_path, options) as manager:
            assert manager.all_steps() == [1, 4] and manager.latest_step() == 4
            assert restored_step(manager) == 4  # restore() with no step: the latest good one
            damaged = {entry.step: entry.reason for entry in manager.damaged_steps()}
            assert sorted(damaged) == [2, 3, 5, 6, 7, 9]
            assert damaged[2].startswith("its metadata cannot be read: Metadata file "
                                         f"{tmp_path}/2/_CHECKPOINT_METADATA is not valid JSON")
            assert damaged[3].startswith(f"it cannot be read: Could not look up {tmp_path}/3: "
                                         "Too many levels of symbolic links")
            assert damaged[5] == damaged[6] == damaged[9] == _EMPTY_OR_PARTIAL
            assert damaged[7] == "it is a file, not a checkpoint folder"
            manager.reload()
            manager.reload()
    # Logged once per manager and entry, not once per reload.
    logged = [r.getMessage() for r in caplog.records if "is named like step 5" in r.getMessage()]
    assert len(logged) == 2, logged
    assert "never deletes it; inspect it" in logged[0]


def test_max_to_keep_never_deletes_good_steps_for_a_damaged_one(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [1, 2, 4])
    _damage(tmp_path)
    with CheckpointManager(tmp_path, sync_options(max_to_keep=2)) as manager:
        save_steps(manager, [10])
        assert manager.all_steps() == [4, 10]
        with pytest.raises(StepAlreadyExistsError, match=(
                r"Cannot save step 5: .*/5 is named like it but it is empty or partial.*To "
                r"fix, inspect that entry and move or delete it, or save another step")):
            manager.save(5, args=args.StandardSave({"x": 1}), force=True)
    # Damaged entries stay exactly as they were; step 2 was a good step's name gone bad.
    assert step_folders(tmp_path) == ["10", "2", "3", "4", "5", "6", "7", "9"]
    assert os.readlink(tmp_path / "3") == str(tmp_path / "3")


def test_cleanup_removes_only_the_tmp_names_the_libraries_create(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [1])
    made = ["2.orbax-checkpoint-tmp", "3.orbax-checkpoint-tmp-1712",
            "4.orbax-checkpoint-tmp-1733400000000000000-99999-0a1b2c3d-0a1b2c3d",
            "1.orbax-checkpoint-tmp-1733400000000000000-99999-0a1b2c3d-0a1b2c3d-deleting"]
    users = ["5.orbax-checkpoint-tmp.mybackup", "6.orbax-checkpoint-tmp-old-copy",
             "notes.orbax-checkpoint-tmp"]
    for name in made + users:
        (tmp_path / name).mkdir()
    (tmp_path / "13.orbax-checkpoint-tmp").write_text("a user's file with a tmp name")
    with CheckpointManager(tmp_path, sync_options(cleanup_tmp_directories=True)) as manager:
        assert manager.all_steps() == [1]
    assert step_folders(tmp_path) == sorted(["1", "13.orbax-checkpoint-tmp", *users])


def test_deleting_a_step_another_manager_deleted_is_success(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [1, 2])
    options = sync_options(max_to_keep=2, allow_concurrent_writers=True)
    with CheckpointManager(tmp_path, options) as first, \
            CheckpointManager(tmp_path, options) as second:
        assert first.save(3, args=args.StandardSave({"x": 3}))  # deletes step 1
        assert second.save(4, args=args.StandardSave({"x": 4}))  # deletes step 1 again
        assert second.all_steps() == [2, 4] and second.all_steps(read=True) == [2, 3, 4]
        second.delete(3)
        first.delete(3)  # already gone: success
    assert step_folders(tmp_path) == ["2", "4"]


def test_a_step_deleted_before_the_read_raises_step_not_found(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [1, 2])
    with CheckpointManager(tmp_path, CheckpointManagerOptions(read_only=True)) as reader:
        with CheckpointManager(tmp_path, sync_options()) as trainer:
            trainer.delete(1)
        assert reader.all_steps() == [1, 2]  # it has not reloaded
        with pytest.raises(StepNotFoundError, match=(
                r"Step 1 at .*/1 was deleted while it was being read .* To fix, hold the step "
                r"while reading it: `with hold_read_lease\(directory, step\):`")):
            reader.restore(1)
        assert int(reader.restore(2)["default"]["step"]) == 2
