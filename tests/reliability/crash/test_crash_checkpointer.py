"""SIGKILL during Checkpointer / AsyncCheckpointer saves and during restores.

Restores run by turns through a Checkpointer and a fresh CheckpointManager.

After every kill the run directory is opened fresh (a new Checkpointer in this process)
and must show: only committed step folders; the newest of them at least as new as the
last step the child saw committed, and bit-exact; a save of the killed step that
succeeds and removes that step's tmp folder; and, for restores, not one byte, inode or
mtime changed.
"""

from __future__ import annotations

import os
from pathlib import Path

import jaxpoint.core as ocp
import pytest
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.manager.writer_lock import WRITER_LOCK_FILE
from jaxpoint.core.storage import COMMIT_MARKER, TMP_SUFFIX
from reliability.crash import harness
from reliability.crash.state import device_state, mismatches

pytestmark = pytest.mark.slow
MAX_SAVES = 40


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.StandardCheckpointHandler())


def _save(path: Path, step: int, *, force: bool = False) -> None:
    _checkpointer().save(path, args=ocp.args.StandardSave(device_state(step)), force=force)


def _assert_restores(path: Path, step: int, record: harness.KillRecord) -> None:
    problems = mismatches(_checkpointer().restore(path), step)
    assert not problems, f"{path} after {record}: {problems}"


def _step_folders(directory: Path) -> list[int]:
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _tmp_names(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if TMP_SUFFIX in name)


def check_steps_after_kill(directory: Path, record: harness.KillRecord,
                           verified: set[int]) -> int:
    """The checks of a killed `<dir>/<step>` run; returns the next step to save."""
    steps = _step_folders(directory)
    for step in steps:
        folder = directory / str(step)
        assert (folder / COMMIT_MARKER).is_file() and (folder / "_CHECKPOINT_METADATA").is_file(), \
            f"uncommitted step {step} is visible after {record}: {sorted(os.listdir(folder))}"
    if record.committed is not None:
        assert steps and steps[-1] >= record.committed, \
            f"step {record.committed} was committed before the kill but is gone: {steps}"
    if steps:
        assert steps[-1] <= record.begun, f"step {steps[-1]} was never saved: {record}"
    for step in steps:
        if step not in verified:
            _assert_restores(directory / str(step), step, record)
            verified.add(step)
    # The steps in flight at the kill: the one begun, and with async saves the one before.
    for killed in range(max(steps, default=0) + 1, record.begun + 1):
        _save(directory / str(killed), killed)
        _assert_restores(directory / str(killed), killed, record)
        verified.add(killed)
        steps.append(killed)
    assert _tmp_names(directory) == [], f"tmp leftovers after the next save: {record}"
    return max(steps) + 1


def _run_step_chain(chain, chain_rng, crash_session, run_dir, *, is_async: bool) -> None:
    verified: set[int] = set()
    next_step = 1
    for target in chain.targets:
        record = crash_session.kill(chain.scenario, {
            "kind": "checkpointer", "directory": str(run_dir), "start_step": next_step,
            "max_saves": MAX_SAVES, "async": is_async, "force": False}, target, chain_rng)
        record.disk = harness.disk_state(run_dir)
        next_step = check_steps_after_kill(run_dir, record, verified)


@pytest.mark.crash_scenario("ckpt-sync")
def test_sigkill_during_sync_saves_loses_nothing(chain, chain_rng, crash_session, run_dir):
    _run_step_chain(chain, chain_rng, crash_session, run_dir, is_async=False)


@pytest.mark.crash_scenario("ckpt-async")
def test_sigkill_during_async_saves_loses_nothing(chain, chain_rng, crash_session, run_dir):
    _run_step_chain(chain, chain_rng, crash_session, run_dir, is_async=True)


@pytest.mark.crash_scenario("ckpt-force")
def test_sigkill_during_forced_overwrite_keeps_old_or_new(chain, chain_rng, crash_session,
                                                          run_dir):
    current = run_dir / "current"
    _save(current, 0)
    version = 0
    for target in chain.targets:
        record = crash_session.kill(chain.scenario, {
            "kind": "checkpointer", "directory": str(run_dir), "start_step": version + 1,
            "max_saves": MAX_SAVES, "async": False, "force": True}, target, chain_rng)
        record.disk = harness.disk_state(run_dir)
        assert (current / COMMIT_MARKER).is_file(), \
            f"{current} is gone after {record}; on disk: {sorted(os.listdir(run_dir))}"
        restored = _checkpointer().restore(current)
        candidates = {record.committed or version, record.begun}
        assert any(not mismatches(restored, v) for v in candidates), \
            f"{current} holds neither version {sorted(candidates)} after {record}"
        version = record.begun
        _save(current, version, force=True)
        _assert_restores(current, version, record)
        assert _tmp_names(run_dir) == [], f"tmp leftovers after the next save: {record}"


@pytest.mark.crash_scenario("restore")
def test_sigkill_during_restore_changes_nothing_on_disk(chain, chain_rng, crash_session,
                                                        run_dir):
    options = CheckpointManagerOptions(enable_async_checkpointing=False)
    with CheckpointManager(run_dir, options=options) as manager:
        for step in (1, 2):
            manager.save(step, args=ocp.args.StandardSave(device_state(step)))
    for target in chain.targets:
        before = harness.tree_snapshot(run_dir)
        record = crash_session.kill(chain.scenario, {
            "kind": "restore", "directory": str(run_dir), "max_saves": MAX_SAVES},
            target, chain_rng)
        after = harness.tree_snapshot(run_dir)
        record.disk = harness.disk_state(run_dir)
        # The writing manager the child opens records itself in the writer lock file.
        changed = sorted(path for path in before.keys() | after.keys()
                         if before.get(path) != after.get(path) and path != WRITER_LOCK_FILE)
        assert not changed, f"a killed restore changed {changed} ({record})"
        assert record.restore_mismatches == 0, f"a restore returned wrong data: {record}"
        _assert_restores(run_dir / "2" / "default", 2, record)
