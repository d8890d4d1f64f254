"""SIGKILL during CheckpointManager saves, deletions of old steps and background deletions.

The child saves steps `args.Composite(state=StandardSave, extra=JsonSave)` through a
manager with max_to_keep=2 (sync saves deleting in the save call, or async saves with
background deletion). After each kill a fresh manager with cleanup_tmp_directories=True
opens the directory and must list exactly the committed step folders, none newer than
what was begun and none older than what the child saw committed, every one bit-exact;
no tmp folder may survive the cleanup; the killed step saves again and the policy trims
the directory back to max_to_keep.
"""

from __future__ import annotations

import os
from pathlib import Path

import jaxpoint.core as ocp
import pytest
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.manager.leases import LEASE_FOLDER
from jaxpoint.core.storage import COMMIT_MARKER, TMP_SUFFIX
from reliability.crash import harness
from reliability.crash.state import device_state, mismatches

pytestmark = pytest.mark.slow
MAX_TO_KEEP = 2
MAX_SAVES = 40


def _fresh_manager(directory: Path) -> CheckpointManager:
    return CheckpointManager(directory, options=CheckpointManagerOptions(
        max_to_keep=MAX_TO_KEEP, enable_async_checkpointing=False, cleanup_tmp_directories=True))


def _committed_folders(directory: Path) -> list[int]:
    return sorted(int(name) for name in os.listdir(directory)
                  if name.isdigit() and (directory / name / COMMIT_MARKER).is_file())


def _assert_step_restores(manager: CheckpointManager, step: int, record: harness.KillRecord) -> None:
    restored = manager.restore(step)
    problems = mismatches(restored["state"], step)
    assert not problems, f"step {step} after {record}: {problems}"
    assert restored["extra"] == {"step": step}, f"step {step} after {record}: {restored['extra']}"


def check_manager_after_kill(directory: Path, record: harness.KillRecord) -> int:
    """The checks of a killed manager run; returns the next step to save."""
    committed_before = _committed_folders(directory)
    with _fresh_manager(directory) as manager:
        steps = manager.all_steps()
        assert steps == committed_before, \
            f"listed {steps}, committed folders {committed_before} after {record}"
        leftovers = sorted(name for name in os.listdir(directory) if TMP_SUFFIX in name)
        assert leftovers == [], f"cleanup_tmp_directories left {leftovers} after {record}"
        leases = directory / LEASE_FOLDER
        stale = sorted(os.listdir(leases)) if leases.is_dir() else []
        assert stale == [], f"the killed manager's lease files survive a fresh open: {stale}"
        if record.committed is not None:
            assert steps and steps[-1] >= record.committed, \
                f"step {record.committed} was committed before the kill but is gone: {steps}"
        if steps:
            assert steps[-1] <= record.begun, f"step {steps[-1]} was never saved: {record}"
            assert manager.latest_step() == steps[-1]
        for step in steps:
            _assert_step_restores(manager, step, record)
        next_step = record.begun if record.begun not in steps else record.begun + 1
        assert manager.save(next_step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(device_state(next_step)),
            extra=ocp.args.JsonSave({"step": next_step})))
        manager.wait_until_finished()
        _assert_step_restores(manager, next_step, record)
        kept = manager.all_steps()
        assert kept[-1] == next_step and len(kept) <= MAX_TO_KEEP, f"kept {kept} after {record}"
    assert _committed_folders(directory) == kept, f"on disk {os.listdir(directory)} after {record}"
    return next_step + 1


def _run_manager_chain(chain, chain_rng, crash_session, run_dir, *, is_async: bool) -> None:
    next_step = 1
    for target in chain.targets:
        record = crash_session.kill(chain.scenario, {
            "kind": "manager", "directory": str(run_dir), "start_step": next_step,
            "max_saves": MAX_SAVES, "max_to_keep": MAX_TO_KEEP, "async": is_async,
            "background_delete": is_async}, target, chain_rng)
        record.disk = harness.disk_state(run_dir)
        next_step = check_manager_after_kill(run_dir, record)


@pytest.mark.crash_scenario("manager-sync")
def test_sigkill_during_manager_saves_and_deletions(chain, chain_rng, crash_session, run_dir):
    _run_manager_chain(chain, chain_rng, crash_session, run_dir, is_async=False)


@pytest.mark.crash_scenario("manager-async")
def test_sigkill_during_async_manager_saves_and_background_deletion(chain, chain_rng,
                                                                   crash_session, run_dir):
    _run_manager_chain(chain, chain_rng, crash_session, run_dir, is_async=True)
