"""Two actors on one directory, as real processes: writers racing for the same steps, a
second writer detected, a reader racing deletion (issue 13, items 1, 4 and 5)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from jaxpoint.core import args
from jaxpoint.core.errors import DirectoryInUseError, StepAlreadyExistsError, StepNotFoundError
from jaxpoint.core.inspection import verify
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.storage import parse_tmp_name
from jaxpoint.core.testing.multiprocess import run_process_id, run_processes

ROUNDS = 30
KEEP = 4
SHAPE = (64, 256)  # 64 KiB per array: a race is about timing, not size


def _state(writer: int, step: int) -> dict[str, np.ndarray]:
    value = 1000 * (writer + 1) + step
    return {"w": np.full(SHAPE, value, np.float32), "b": np.full(SHAPE[0], value, np.int32),
            "c": np.full((8,), value, np.float64)}


def _writer_of(restored: dict[str, np.ndarray], step: int) -> int:
    """Which writer's state `restored` is; raises if its leaves come from both."""
    writers = {int(np.asarray(leaf).flat[0]) // 1000 - 1 for leaf in restored.values()}
    assert len(writers) == 1, f"step {step} mixes the writers {writers}"
    writer = writers.pop()
    for name, leaf in _state(writer, step).items():
        np.testing.assert_array_equal(np.asarray(restored[name]), leaf)
    return writer


def _meet(barrier: Path, name: str, *, parties: int = 2, timeout_s: float = 60.0) -> None:
    """A barrier through files: each party creates its file, then waits for all."""
    (barrier / f"{name}.{run_process_id()}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(barrier.glob(f"{name}.*"))) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other writer never reached barrier {name!r}")
        time.sleep(0.001)


def _race_for_steps(directory: str, barrier: str) -> list[tuple[str, int]]:
    """Saves every step in lockstep with the other writer; per step: outcome, writer read."""
    me = run_process_id()
    rng = random.Random(1234 + me)
    options = CheckpointManagerOptions(enable_async_checkpointing=me == 1, max_to_keep=KEEP,
                                       allow_concurrent_writers=True)
    results = []
    with CheckpointManager(directory, options) as manager:
        for step in range(ROUNDS):
            _meet(Path(barrier), f"round-{step}")
            time.sleep(rng.uniform(0, 0.02))
            try:
                manager.save(step, args=args.StandardSave(_state(me, step)), force=True)
                manager.wait_until_finished()
                outcome = "saved"
            except StepAlreadyExistsError as error:
                assert f"Step {step}" in str(error), error
                # Lost at the commit (both were writing) or before starting (it was there).
                outcome = "lost at commit" if "by another writer" in str(error) else "lost"
            _meet(Path(barrier), f"settled-{step}")
            results.append((outcome, _writer_of(manager.restore(step), step)))
    return results


def test_two_writers_of_the_same_steps_never_commit_a_mixed_step(tmp_path: Path) -> None:
    directory, barrier = tmp_path / "run", tmp_path / "barrier"
    barrier.mkdir()
    started = time.monotonic()
    sync_writer, async_writer = run_processes(
        _race_for_steps, num_processes=2, devices_per_process=1, timeout_s=240,
        args=(str(directory), str(barrier)), initialize_distributed=False)
    for step, (first, second) in enumerate(zip(sync_writer, async_writer, strict=True)):
        assert sorted([first[0], second[0]])[1] == "saved", (step, first, second)
        assert sorted([first[0], second[0]])[0].startswith("lost"), (step, first, second)
        winner = 0 if first[0] == "saved" else 1
        assert first[1] == second[1] == winner, f"step {step}: both read the winner's state"
    with CheckpointManager(directory, CheckpointManagerOptions(read_only=True)) as reader:
        assert reader.all_steps() == list(range(ROUNDS - KEEP, ROUNDS))
        assert reader.damaged_steps() == []
        for step in reader.all_steps():
            _writer_of(reader.restore(step), step)
            verify(directory / str(step))
    leftovers = [name for name in os.listdir(directory) if parse_tmp_name(name) is not None]
    assert leftovers == []
    outcomes = [outcome for outcome, _ in sync_writer + async_writer]
    assert "lost at commit" in outcomes, "the writers never raced: widen the timing"
    print(f"two writers, {ROUNDS} rounds: {time.monotonic() - started:.1f} s; sync writer won "
          f"{[o for o, _ in sync_writer].count('saved')}, {outcomes.count('lost at commit')} "
          f"lost at the commit, {outcomes.count('lost')} before writing")


_HOLD_SCRIPT = """
import sys, time
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
manager = CheckpointManager(sys.argv[1], CheckpointManagerOptions(enable_async_checkpointing=False))
open(sys.argv[2], "w").close()
time.sleep(120)
"""


def test_a_second_writer_is_told_who_holds_the_directory(tmp_path: Path) -> None:
    directory, ready = tmp_path / "run", tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_SCRIPT, str(directory), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder never started"
            time.sleep(0.05)
        with pytest.raises(DirectoryInUseError, match=(
                rf"Expected no other writer of {directory}, found process {holder.pid} on host "
                r"\S+ \(since .*\) holding _WRITER_LOCK\. .* pass allow_concurrent_writers=True")):
            CheckpointManager(directory)
        with CheckpointManager(directory, CheckpointManagerOptions(read_only=True)) as reader:
            assert reader.all_steps() == []
        options = CheckpointManagerOptions(allow_concurrent_writers=True,
                                           enable_async_checkpointing=False)
        with CheckpointManager(directory, options) as deliberate:
            assert deliberate.save(1, args=args.StandardSave(_state(0, 1)))
    finally:
        holder.send_signal(signal.SIGKILL)  # a crashed holder: its lock must not outlive it
        holder.wait()
    with CheckpointManager(directory, CheckpointManagerOptions(enable_async_checkpointing=False)) \
            as successor:
        assert successor.all_steps() == [1]


def _wait_for(path: Path, what: str) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.0005)


def _delete_on_signal(directory: str, go: str, rounds: int) -> int:
    """Deletes step r as soon as the reader says it started reading it (plus a random delay)."""
    rng = random.Random(7)
    with CheckpointManager(directory, CheckpointManagerOptions(
            enable_async_checkpointing=False)) as manager:
        Path(go, "ready").touch()
        for step in range(rounds):
            _wait_for(Path(go, str(step)), f"the reader to read step {step}")
            time.sleep(rng.uniform(0, 0.01))
            manager.delete(step)
            Path(go, f"{step}.deleted").touch()
    return rounds


_READ_ROUNDS = 16


def test_a_step_deleted_while_it_is_read_is_reported_as_deleted(tmp_path: Path) -> None:
    directory, go = tmp_path / "run", tmp_path / "go"
    go.mkdir()
    big = {f"p{i}": np.full((256, 1024), i, np.float32) for i in range(8)}  # 8 MiB per step
    options = CheckpointManagerOptions(enable_async_checkpointing=False)
    with CheckpointManager(directory, options) as writer:
        for step in range(_READ_ROUNDS):
            writer.save(step, args=args.StandardSave(big))
    outcomes: list[str] = []

    def read_one(reader: CheckpointManager, step: int) -> str:
        try:
            restored = reader.restore(step)
        except StepNotFoundError as error:
            expected = (f"Step {step} at", "was deleted while it was being read",
                        "hold_read_lease")
            return "deleted" if all(part in str(error) for part in expected) else repr(error)
        except Exception as error:  # reported below: only the two outcomes above are right
            return repr(error)
        same = all(np.array_equal(np.asarray(restored[k]), v) for k, v in big.items())
        return "read" if same else "wrong data"

    def read_all() -> None:
        reader = CheckpointManager(directory, CheckpointManagerOptions(read_only=True))
        _wait_for(go / "ready", "the deleter to start")
        for step in range(_READ_ROUNDS):
            (go / str(step)).touch()
            outcomes.append(read_one(reader, step))
            _wait_for(go / f"{step}.deleted", f"step {step} to be deleted")

    reader = threading.Thread(target=read_all)
    reader.start()
    assert run_processes(_delete_on_signal, num_processes=1, devices_per_process=1,
                         timeout_s=240, args=(str(directory), str(go), _READ_ROUNDS),
                         initialize_distributed=False) == [_READ_ROUNDS]
    reader.join()
    assert len(outcomes) == _READ_ROUNDS and set(outcomes) <= {"read", "deleted"}, outcomes
    assert "deleted" in outcomes, "no deletion hit a read: shorten the deleter's delay"
    print(f"reads racing deletion: {outcomes.count('read')} read whole, "
          f"{outcomes.count('deleted')} reported deleted")
