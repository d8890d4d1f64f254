"""Evaluators following a run: checkpoints_iterator, wait_for_new_checkpoint and read leases
that keep a manager in another process from deleting the step being read."""

from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from core.manager.manager_support import save_steps, step_folders, sync_options
from jaxpoint.core.errors import InvalidArgumentError, StepNotFoundError
from jaxpoint.core.manager import (
    CheckpointManager,
    checkpoints_iterator,
    hold_read_lease,
    leases,
    standard_name_format,
    wait_for_new_checkpoint,
)
from jaxpoint.core.storage import Location
from jaxpoint.core.testing.multiprocess import (
    ProcessStatus,
    crash_process,
    run_processes_with_outcomes,
)

FAST = {"seconds_to_sleep": 0.02}


def _wait_for_file(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def test_wait_times_out_with_minus_one(tmp_path: Path) -> None:
    started = time.monotonic()
    with wait_for_new_checkpoint(tmp_path / "missing", timeout=0.2, **FAST) as step:
        assert step == -1
    assert time.monotonic() - started < 2


def test_wait_returns_the_newest_step_at_or_after_until_step(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(step_prefix="ckpt",
                                                  step_format_fixed_length=4)) as manager:
        save_steps(manager, [1, 5, 9])
    kwargs = {"step_prefix": "ckpt", "step_format_fixed_length": 4, "timeout": 0.2, **FAST}
    with wait_for_new_checkpoint(tmp_path, **kwargs) as step:
        assert step == 9
    with wait_for_new_checkpoint(tmp_path, until_step=10, **kwargs) as step:
        assert step == -1
    with wait_for_new_checkpoint(tmp_path, timeout=0.1, **FAST) as unprefixed:
        assert unprefixed == -1  # other names are not steps of this format


def test_timeout_fn_decides_whether_to_keep_waiting(tmp_path: Path) -> None:
    answers = iter([False, False, True])
    calls = []

    def training_finished() -> bool:
        calls.append(time.monotonic())
        return next(answers)

    with wait_for_new_checkpoint(tmp_path, timeout=0.05, timeout_fn=training_finished,
                                 **FAST) as step:
        assert step == -1 and len(calls) == 3


def test_iterator_follows_a_training_thread(tmp_path: Path) -> None:
    def train() -> None:
        with CheckpointManager(tmp_path, sync_options()) as manager:
            for step in (0, 10, 20):
                time.sleep(0.15)
                save_steps(manager, [step])

    seen = []
    with ThreadPoolExecutor(1) as pool:
        trainer = pool.submit(train)
        for step in checkpoints_iterator(tmp_path, timeout=30, **FAST):
            seen.append(step)
            if step == 20:
                break
        trainer.result()
    assert seen == sorted(seen) and seen[-1] == 20 and type(seen[0]) is int
    assert not any((tmp_path / leases.LEASE_FOLDER).iterdir())  # every lease released


def test_iterator_keeps_min_interval_and_stops_after_timeout(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [3])
    started = time.monotonic()
    assert list(checkpoints_iterator(tmp_path, timeout=0.1, min_interval_secs=0.3, **FAST)) == [3]
    assert time.monotonic() - started >= 0.3


def test_lease_defers_deletion_in_the_same_process(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(max_to_keep=1)) as manager:
        save_steps(manager, [1])
        with wait_for_new_checkpoint(tmp_path, timeout=1, **FAST) as step:
            assert step == 1
            save_steps(manager, [2])
            assert step_folders(tmp_path) == ["1", "2"] and manager.all_steps() == [2]
        save_steps(manager, [3])
    assert step_folders(tmp_path) == ["3"]


def test_a_step_being_deleted_cannot_be_leased(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [1, 2])
    root = Location.parse(tmp_path)
    assert leases.begin_deletion(root, "2")  # a manager elsewhere is deleting step 2
    with pytest.raises(StepNotFoundError, match="Step 2 in .* is being deleted by a CheckpointManager"):
        with hold_read_lease(tmp_path, 2):
            pass
    with wait_for_new_checkpoint(tmp_path, timeout=0.2, **FAST) as step:
        assert step == 1  # the newest step that can be held
    leases.end_deletion(root, "2")
    with hold_read_lease(tmp_path, 2) as held:
        assert held == 2
        assert not leases.begin_deletion(root, "2")  # and a manager now backs off
        assert not (tmp_path / leases.LEASE_FOLDER / "2.deleting").exists()


def _write_lease(tmp_path: Path, name: str, *, host: str, pid: int, expires_in_s: float) -> None:
    folder = tmp_path / leases.LEASE_FOLDER
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.elsewhere.lease").write_text(json.dumps(
        {"host": host, "pid": pid, "expires_at": time.time() + expires_in_s}))


def test_leases_from_other_hosts_count_until_they_expire(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options(max_to_keep=1)) as manager:
        save_steps(manager, [1])
        _write_lease(tmp_path, "1", host="evaluator-host-7", pid=1, expires_in_s=60)
        save_steps(manager, [2])
        assert step_folders(tmp_path) == ["1", "2"]
        _write_lease(tmp_path, "1", host="evaluator-host-7", pid=1, expires_in_s=-1)
        save_steps(manager, [3])
        assert step_folders(tmp_path) == ["3"]
    assert leases.live_lease_holders(Location.parse(tmp_path), "1") == []


def test_expired_leases_are_removed_at_start_up(tmp_path: Path) -> None:
    _write_lease(tmp_path, "4", host=socket.gethostname(), pid=2**22 + 12345, expires_in_s=60)
    (tmp_path / leases.LEASE_FOLDER / "5.deleting").write_text(json.dumps(
        {"host": "elsewhere", "pid": 1, "expires_at": time.time() - 5}))
    (tmp_path / leases.LEASE_FOLDER / "6.other.lease").write_text("{not json")
    dead_writer = tmp_path / leases.LEASE_FOLDER / f"7.deleting.partial-{2**22 + 12345}"
    dead_writer.write_text('{"host": "h')  # a writer killed before renaming its file
    live_writer = tmp_path / leases.LEASE_FOLDER / f"8.x.lease.partial-{os.getpid()}"
    live_writer.write_text("")
    CheckpointManager(tmp_path, sync_options()).close()
    assert list((tmp_path / leases.LEASE_FOLDER).iterdir()) == [live_writer]


def test_bad_evaluator_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="Expected seconds_to_sleep to be a number of seconds >= 0"):
        with wait_for_new_checkpoint(tmp_path, seconds_to_sleep=-1):
            pass
    with pytest.raises(InvalidArgumentError, match="Expected lease_ttl_s to be a number of seconds"):
        next(checkpoints_iterator(tmp_path, lease_ttl_s=0))
    with pytest.raises(InvalidArgumentError, match="step_name_format names steps by itself"):
        with wait_for_new_checkpoint(tmp_path, step_prefix="a",
                                     step_name_format=standard_name_format()):
            pass
    with pytest.raises(InvalidArgumentError, match="Expected the until_step to be an int >= 0"):
        with wait_for_new_checkpoint(tmp_path, until_step=-3):
            pass
    with pytest.raises(StepNotFoundError, match=r"Expected committed step 4 in .*, found only steps \[\]"):
        with hold_read_lease(tmp_path, 4):
            pass


# ---------------------------------------------------------------- another process


def _evaluate_in_another_process(directory: str) -> list[int]:
    """An evaluator process: holds each new step while it reads it, then crashes holding one.

    Signals through files in `directory`/signals: `holding_<step>` when it holds a step,
    and it waits for `release_<step>` before reading and moving on.
    """
    signals = Path(directory) / "signals"
    read = []
    with CheckpointManager(directory, sync_options(read_only=True)) as reader:
        for step in checkpoints_iterator(directory, timeout=30, seconds_to_sleep=0.02):
            (signals / f"holding_{step}").write_text("")
            _wait_for_file(signals / f"release_{step}")
            reader.reload()
            read.append(int(reader.restore(step)["step"]))  # still there despite max_to_keep=1
            if step >= 3:
                break
        (signals / "results").write_text(json.dumps(read))
        _wait_for_file(signals / "saved_5")
        with hold_read_lease(directory, 5):
            (signals / "holding_5").write_text("")
            _wait_for_file(signals / "crash")
            crash_process(3)  # dies holding the lease on step 5
    return read


def test_a_manager_never_deletes_what_another_process_reads(tmp_path: Path) -> None:
    signals = tmp_path / "signals"
    signals.mkdir()
    with CheckpointManager(tmp_path, sync_options(max_to_keep=1)) as manager, \
            ThreadPoolExecutor(1) as pool:
        save_steps(manager, [1])
        evaluator = pool.submit(run_processes_with_outcomes, _evaluate_in_another_process,
                                num_processes=1, devices_per_process=1, timeout_s=120,
                                args=(str(tmp_path),), initialize_distributed=False)
        _wait_for_file(signals / "holding_1")
        save_steps(manager, [2, 3])  # max_to_keep=1 would delete 1 and 2
        assert manager.all_steps() == [3] and step_folders(tmp_path) == ["1", "3", "signals"]
        (signals / "release_1").write_text("")
        _wait_for_file(signals / "holding_3")
        (signals / "release_3").write_text("")
        _wait_for_file(signals / "results")
        assert json.loads((signals / "results").read_text()) == [1, 3]
        save_steps(manager, [4, 5])  # step 1's lease has ended, so it goes now
        assert step_folders(tmp_path) == ["5", "signals"]
        (signals / "saved_5").write_text("")
        _wait_for_file(signals / "holding_5")
        save_steps(manager, [6])
        assert step_folders(tmp_path) == ["5", "6", "signals"]  # held by a live reader
        (signals / "crash").write_text("")
        [outcome] = evaluator.result()
        assert outcome.status is ProcessStatus.DIED and outcome.exit_code == 3
        save_steps(manager, [7])  # the lease of a dead process on this host is void
        assert step_folders(tmp_path) == ["7", "signals"]


def test_leases_can_be_turned_off_for_read_only_storage(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        save_steps(manager, [2])
    assert list(checkpoints_iterator(tmp_path, timeout=0, lease_ttl_s=None, **FAST)) == [2]
    assert not (tmp_path / leases.LEASE_FOLDER).exists() or not any(
        (tmp_path / leases.LEASE_FOLDER).iterdir())


def test_an_unreadable_lease_does_not_block_deletion(tmp_path: Path, caplog) -> None:
    with CheckpointManager(tmp_path, sync_options(max_to_keep=1)) as manager:
        save_steps(manager, [1])
        (tmp_path / leases.LEASE_FOLDER).mkdir()
        (tmp_path / leases.LEASE_FOLDER / "1.foreign.lease").write_text("garbage")
        save_steps(manager, [2])
    assert step_folders(tmp_path) == ["2"]
    assert "Ignoring an unreadable read lease" in caplog.text
