"""A save killed mid-write is never listed or restored and never blocks the next save;
a deletion killed midway leaves only a tmp folder; SIGTERM makes the next save happen."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from core.manager.gate_handler import GateHandler, GateSave
from core.manager.manager_support import save_steps, step_folders, sync_options, tree
from jaxpoint.core import args
from jaxpoint.core.errors import InvalidArgumentError, StepNotFoundError
from jaxpoint.core.manager import (
    AnySavePolicy,
    CheckpointManager,
    CheckpointManagerOptions,
    FixedIntervalPolicy,
)
from jaxpoint.core.storage import Location
from jaxpoint.core.testing.multiprocess import (
    ProcessStatus,
    run_process_id,
    run_processes_with_outcomes,
)


def _save_then_die_mid_write(directory: str) -> None:
    """Saves step 1, then dies while writing step 2 (a real kill: no cleanup runs).

    Process 0 saves synchronously into `directory`/sync, process 1 asynchronously into
    `directory`/async; both run at once to keep the suite fast.
    """
    is_async = run_process_id() == 1
    options = CheckpointManagerOptions(enable_async_checkpointing=is_async, step_prefix="ckpt")
    where = os.path.join(directory, "async" if is_async else "sync")
    manager = CheckpointManager(where, options, item_handlers=GateHandler())
    manager.save(1, args=GateSave({"v": 1}))
    manager.wait_until_finished()
    manager.save(2, args=GateSave({"v": 2}, crash=True))
    manager.wait_until_finished()  # never returns: the write ends the process


def test_a_killed_save_is_never_listed_and_never_blocks(tmp_path: Path) -> None:
    outcomes = run_processes_with_outcomes(
        _save_then_die_mid_write, num_processes=2, devices_per_process=1, timeout_s=90,
        args=(str(tmp_path),), initialize_distributed=False)
    assert [(o.status, o.exit_code) for o in outcomes] == [(ProcessStatus.DIED, 9)] * 2
    for kind in ("sync", "async"):
        directory = tmp_path / kind
        first, leftover = step_folders(directory)
        assert first == "ckpt_1" and leftover.startswith("ckpt_2.orbax-checkpoint-tmp-")
        assert (directory / leftover / "default" / "partial").is_file()
        options = sync_options(step_prefix="ckpt")
        with CheckpointManager(directory, options, item_handlers=GateHandler()) as manager:
            assert manager.all_steps() == [1] and manager.latest_step() == 1
            with pytest.raises(StepNotFoundError,
                               match=r"Expected step 2 in .*, found only steps \[1\]"):
                manager.restore(2)
            assert manager.save(2, args=GateSave({"v": 22}))  # the leftover does not block it
            assert manager.restore(2) == {"v": 22}
        assert step_folders(directory) == ["ckpt_1", "ckpt_2"]


def test_cleanup_tmp_directories_removes_leftovers_of_saves_and_deletions(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [1, 2, 3])
    # What a process killed mid-save and one killed mid-deletion leave behind:
    (tmp_path / "4.orbax-checkpoint-tmp" / "default").mkdir(parents=True)
    (tmp_path / "2").rename(tmp_path / "2.orbax-checkpoint-tmp-deleting")
    (tmp_path / "notes.orbax-checkpoint-tmp").mkdir()  # not a step: left alone
    with CheckpointManager(tmp_path, sync_options()) as keeps:
        assert keeps.all_steps() == [1, 3]
    assert len(step_folders(tmp_path)) == 5
    with CheckpointManager(tmp_path, sync_options(cleanup_tmp_directories=True)) as cleans:
        assert cleans.all_steps() == [1, 3]
    assert step_folders(tmp_path) == ["1", "3", "notes.orbax-checkpoint-tmp"]


def test_cleanup_on_an_object_store_removes_steps_without_marker() -> None:
    root = "memory://crash-test/run"
    with CheckpointManager(root, CheckpointManagerOptions(enable_async_checkpointing=False)) as manager:
        save_steps(manager, [1])
    location = Location.parse(root)
    (location / "2" / "default" / "half-written").write_text("x")
    with CheckpointManager(root, sync_options(cleanup_tmp_directories=True)) as cleans:
        assert cleans.all_steps() == [1]
    assert location.list_names() == ["1"]
    location.remove()


def test_sigterm_makes_the_next_step_save_regardless_of_the_interval(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(save_interval_steps=1000)) as manager:
        save_steps(manager, [0])
        assert not manager.should_save(5) and not manager.reached_preemption(5)
        os.kill(os.getpid(), signal.SIGTERM)  # the job is being preempted
        assert manager.reached_preemption(6)
        assert manager.save(7, args=args.StandardSave(tree(7)))
        assert manager.all_steps() == [0, 7]


def test_a_custom_policy_without_preemption_ignores_sigterm(tmp_path: Path) -> None:
    options = sync_options(save_interval_steps=None,
                           save_decision_policy=AnySavePolicy([FixedIntervalPolicy(1000)]))
    with CheckpointManager(tmp_path, options) as manager:
        os.kill(os.getpid(), signal.SIGTERM)
        assert not manager.save(7, args=args.StandardSave(tree(7)))


def test_a_manager_built_outside_the_main_thread_still_saves(tmp_path: Path, caplog) -> None:
    def train() -> list[int]:
        with CheckpointManager(tmp_path, sync_options(save_interval_steps=2)) as manager:
            saved = [s for s in range(5) if manager.save(s, args=args.StandardSave(tree(s)))]
            return saved

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(train).result() == [0, 2, 4]
    assert caplog.text.count("SIGTERM will not trigger a preemption save") == 1


def test_one_save_per_preemption_even_when_the_loop_goes_on(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(save_interval_steps=1000)) as manager:
        os.kill(os.getpid(), signal.SIGTERM)
        saved = []
        for step in range(1, 8):
            if manager.save(step, args=args.StandardSave(tree(step))):
                saved.append(step)
            assert manager.reached_preemption(step)  # asked: the loop keeps control
        assert saved == [1]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the last manager closed


def test_an_injected_preemption_source_decides(tmp_path: Path) -> None:
    class Scheduled:
        """Preempts at step 5, as a scheduler's notice would."""

        def __init__(self) -> None:
            self.held = 0

        def hold(self) -> bool:
            self.held += 1
            return True

        def release(self) -> None:
            self.held -= 1

        def reached_preemption(self, step: int) -> bool:
            return step >= 5

        def stop_process(self) -> None:
            raise AssertionError("the loop asked, so it must not be stopped")

    source = Scheduled()
    options = sync_options(save_interval_steps=1000)
    with CheckpointManager(tmp_path, options, preemption_source=source) as manager:
        assert source.held == 1
        for step in range(1, 10):
            manager.save(step, args=args.StandardSave(tree(step)))
            if manager.reached_preemption(step):
                break
        assert manager.all_steps() == [1, 5]
    assert source.held == 0


def test_a_source_with_handle_sigterm_false_or_of_the_wrong_type_is_refused(
        tmp_path: Path) -> None:
    class Never:
        def hold(self) -> bool:
            return True

        def release(self) -> None:
            pass

        def reached_preemption(self, step: int) -> bool:
            return False

        def stop_process(self) -> None:
            pass

    with pytest.raises(InvalidArgumentError,
                       match=r"either preemption_source=\.\.\. or handle_sigterm=False, got both"):
        CheckpointManager(tmp_path, sync_options(handle_sigterm=False), preemption_source=Never())
    with pytest.raises(InvalidArgumentError,
                       match=r"Expected preemption_source to be a multihost\.PreemptionSource"):
        CheckpointManager(tmp_path, sync_options(), preemption_source=object())
