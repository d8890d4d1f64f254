"""CheckpointManager over an s3:// or gs:// URL against real servers."""

from __future__ import annotations

import logging
import re

import pytest
from jaxpoint.core import args
from jaxpoint.core.errors import StepNotFoundError
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.storage import COMMIT_MARKER, Location
from object_storage.support import (
    abstract,
    assert_bit_exact,
    delete_object,
    object_names,
    sharded_tree,
)
from servers.store import ObjectStore


def _restore(manager: CheckpointManager, step: int) -> dict:
    return manager.restore(step, args=args.StandardRestore(abstract(sharded_tree(step))))


def _step_folders(bucket: ObjectStore, run: str = "run") -> set[str]:
    """Top-level folders under the run that hold a step's files (committed or not)."""
    return {name.split("/", 1)[0] for name in object_names(bucket, f"{run}/")
            if name.split("/", 1)[0].isdigit()}


def test_save_list_restore_delete(bucket: ObjectStore):
    options = CheckpointManagerOptions(enable_async_checkpointing=False)
    with CheckpointManager(bucket.url("run"), options=options) as manager:
        for step in (0, 10, 20):
            assert manager.save(step, args=args.StandardSave(sharded_tree(step)))
        assert (manager.all_steps(), manager.latest_step()) == ([0, 10, 20], 20)
        for step in (0, 10, 20):
            assert_bit_exact(_restore(manager, step), sharded_tree(step))

        manager.delete(10)
        assert manager.all_steps() == [0, 20]
        assert _step_folders(bucket) == {"0", "20"}
        with pytest.raises(StepNotFoundError,
                           match=rf"Expected step 10 in {re.escape(bucket.url('run'))}, found "
                                 r"only steps \[0, 20\]"):
            manager.restore(10)
        assert manager.restore()["step"] == 20


def test_async_saves_keep_max_to_keep_latest_steps(bucket: ObjectStore):
    options = CheckpointManagerOptions(max_to_keep=2, save_interval_steps=2,
                                       enable_async_checkpointing=True,
                                       enable_background_delete=True)
    with CheckpointManager(bucket.url("run"), options=options) as manager:
        saved = [step for step in range(8)
                 if manager.save(step, args=args.StandardSave(sharded_tree(step)))]
        manager.wait_until_finished()
        assert saved == [0, 2, 4, 6]
        assert manager.all_steps() == [4, 6]

    assert _step_folders(bucket) == {"4", "6"}  # background deletions finished by close()
    with CheckpointManager(bucket.url("run"), options=options) as fresh:
        assert (fresh.all_steps(), fresh.latest_step()) == ([4, 6], 6)
        assert_bit_exact(_restore(fresh, 6), sharded_tree(6))
        assert_bit_exact(_restore(fresh, 4), sharded_tree(4))


def test_reload_sees_steps_saved_by_another_manager(bucket: ObjectStore):
    options = CheckpointManagerOptions(enable_async_checkpointing=False)
    with CheckpointManager(bucket.url("run"), options=options) as writer, \
            CheckpointManager(bucket.url("run"), options=options) as reader:
        writer.save(1, args=args.StandardSave(sharded_tree(1)))
        assert reader.all_steps() == []
        reader.reload()
        assert reader.all_steps() == [1]
        writer.save(2, args=args.StandardSave(sharded_tree(2)))
        assert reader.all_steps(read=True) == [1, 2]
        assert_bit_exact(_restore(reader, 2), sharded_tree(2))


def test_step_without_marker_is_not_listed_and_is_saved_again(bucket: ObjectStore):
    options = CheckpointManagerOptions(enable_async_checkpointing=False)
    with CheckpointManager(bucket.url("run"), options=options) as manager:
        for step in (1, 2):
            manager.save(step, args=args.StandardSave(sharded_tree(step)))
    delete_object(bucket, f"run/2/{COMMIT_MARKER}")  # step 2 now looks like a killed save

    replacement = sharded_tree(102)
    with CheckpointManager(bucket.url("run"), options=options) as manager:
        assert (manager.all_steps(), manager.latest_step()) == ([1], 1)
        with pytest.raises(StepNotFoundError, match=r"Expected step 2 in .*found only steps \[1\]"):
            manager.restore(2)
        assert manager.save(2, args=args.StandardSave(replacement))
        assert manager.all_steps() == [1, 2]
        restored = manager.restore(2, args=args.StandardRestore(abstract(replacement)))
    assert_bit_exact(restored, replacement)


def test_a_writer_recorded_by_another_process_is_reported(bucket: ObjectStore, caplog):
    # Object stores have no locks: the record left by another writer is a warning only.
    other = b'{"host": "trainer-7", "pid": 4242, "since": "2026-01-01T00:00:00Z"}'
    Location.parse(bucket.url("run/_WRITER_LOCK")).write_bytes(other)
    options = CheckpointManagerOptions(enable_async_checkpointing=False)
    with caplog.at_level(logging.WARNING, logger="jaxpoint.core.manager.writer_lock"):
        with CheckpointManager(bucket.url("run"), options=options) as manager, \
                CheckpointManager(bucket.url("run"), options=options):  # same process: shared
            assert manager.save(1, args=args.StandardSave(sharded_tree(1)))
            assert any(name.endswith("_WRITER_LOCK") for name in object_names(bucket, "run/"))
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings
    assert "records another writer of" in warnings[0]
    assert "process 4242 on host trainer-7 (since 2026-01-01T00:00:00Z)" in warnings[0]
    assert not any(name.endswith("_WRITER_LOCK") for name in object_names(bucket, "run/"))
