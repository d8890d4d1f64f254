"""A script that exits with a save in flight loses nothing and keeps its own exit status;
SIGTERM saves once and still stops a loop that ignores it; Ctrl-C twice abandons cleanly.

Each case runs exit_child.py in its own process (real signals, real files) and checks the
exit status, the log and which steps are committed or left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from core.manager.exit_child import SCENARIOS

_CHILD = Path(__file__).with_name("exit_child.py")
_TESTS_ROOT = Path(__file__).parents[2]
_ABORT = "terminate called"


def _start(scenario: str, directory: Path, *, write_s: float = 1.5) -> subprocess.Popen[str]:
    assert scenario in SCENARIOS
    env = {**os.environ, "EXIT_CHILD_WRITE_S": str(write_s),
           "PYTHONPATH": os.pathsep.join([str(_TESTS_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(_CHILD), scenario, str(directory)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(child: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = child.communicate(timeout=120)
    return child.returncode, out, err


def _run(scenario: str, directory: Path) -> tuple[int, str, str]:
    return _finish(_start(scenario, directory))


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("_"))


def _wait_for_line(stream, text: str, *, timeout_s: float = 60) -> str:
    """Reads `stream` until a line holding `text` arrives; returns everything read."""
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        for line in stream:
            seen.append(line)
            if text in line:
                done.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(timeout_s), f"never saw {text!r}; got {''.join(seen)!r}"
    return "".join(seen)


@pytest.mark.parametrize(("scenario", "status", "steps"), [
    ("end_of_script", 0, ["1"]),
    ("sys_exit", 3, ["0", "1"]),
    ("exception", 1, ["0", "1"]),
])
def test_exit_with_a_save_in_flight_commits_it_and_keeps_the_status(
        tmp_path: Path, scenario: str, status: int, steps: list[str]) -> None:
    code, _, err = _run(scenario, tmp_path)
    assert code == status, err
    assert _ABORT not in err
    assert _entries(tmp_path) == steps  # committed, and no tmp folder left
    last = steps[-1]
    assert f"waiting for the save of step {last}" in err
    assert f"the save of step {last} ({tmp_path / last}) committed" in err
    if scenario == "exception":
        assert "RuntimeError: the loss went NaN" in err


def test_arrays_in_flight_at_the_end_of_a_script_are_committed(tmp_path: Path) -> None:
    code, _, err = _run("standard_state", tmp_path)
    assert code == 0 and _ABORT not in err, err
    assert _entries(tmp_path) == ["0", "1", "2"]
    import numpy as np
    from jaxpoint.core import args
    from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
    with CheckpointManager(tmp_path, CheckpointManagerOptions(read_only=True)) as manager:
        restored = manager.restore(2, args=args.StandardRestore())
    np.testing.assert_array_equal(restored["w"], np.arange(4 * 1024 * 1024, dtype=np.float32) + 2)


def test_ctrl_c_exits_as_interrupted_after_committing_the_save(tmp_path: Path) -> None:
    child = _start("ctrl_c", tmp_path)
    _wait_for_line(child.stdout, "ready")
    child.send_signal(signal.SIGINT)
    code, _, err = _finish(child)
    assert code == -signal.SIGINT and _ABORT not in err, err
    assert "KeyboardInterrupt" in err
    assert _entries(tmp_path) == ["0", "1"]


def test_ctrl_c_twice_abandons_the_save_and_keeps_what_was_committed(tmp_path: Path) -> None:
    child = _start("ctrl_c", tmp_path, write_s=4.0)
    _wait_for_line(child.stdout, "ready")
    child.send_signal(signal.SIGINT)
    _wait_for_line(child.stderr, "waiting for the save of step 1")
    child.send_signal(signal.SIGINT)
    code, _, err = _finish(child)
    assert code == -signal.SIGINT and _ABORT not in err, err
    assert "abandoning the save of step 1" in err
    assert _entries(tmp_path) == ["0"]  # step 1 never committed; its tmp folder is removed


def test_ctrl_c_twice_in_a_with_block_abandons_the_save(tmp_path: Path) -> None:
    """The second Ctrl-C lands in `close()` (called by `with`), not at interpreter exit."""
    child = _start("ctrl_c_in_with", tmp_path, write_s=3.0)
    _wait_for_line(child.stdout, "ready")
    child.send_signal(signal.SIGINT)
    time.sleep(0.5)  # close() is now waiting for step 1
    child.send_signal(signal.SIGINT)
    code, _, err = _finish(child)
    assert code == -signal.SIGINT and _ABORT not in err, err
    assert "Second Ctrl-C: abandoning the save of step 1" in err
    assert _entries(tmp_path) == ["0"], err  # step 1 never committed; step 0 untouched


def test_a_preemption_break_without_with_commits_the_preemption_save(tmp_path: Path) -> None:
    code, _, err = _run("preemption_break", tmp_path)
    assert code == 0, err
    assert _entries(tmp_path) == ["0", "3"]


def test_sigterm_saves_once_then_stops_a_loop_that_ignores_it(tmp_path: Path) -> None:
    code, out, err = _run("sigterm_ignored", tmp_path)
    assert code == -signal.SIGTERM, err
    assert "step 3 done" in out and "step 4 done" not in out
    assert "without asking manager.reached_preemption(step)" in err
    assert _entries(tmp_path) == ["0", "3"]


def test_sigterm_stops_an_unaware_loop_whose_policy_makes_no_preemption_save(
        tmp_path: Path) -> None:
    code, out, err = _run("sigterm_ignored_by_policy", tmp_path)
    assert code == -signal.SIGTERM, err
    assert "step 3 done" in out and "step 4 done" not in out
    assert "noticed at step 3 and the save policy made no checkpoint" in err
    assert _entries(tmp_path) == ["0"]


def test_handle_sigterm_false_leaves_sigterm_alone(tmp_path: Path) -> None:
    code, _, err = _run("sigterm_not_handled", tmp_path)
    assert code == -signal.SIGTERM, err
    assert "SIGTERM received" not in err
    # Killed at once by the default action: step 0's save was still in flight.
    assert "3" not in _entries(tmp_path)


def test_sigterm_after_the_last_manager_closed_ends_the_process(tmp_path: Path) -> None:
    code, out, err = _run("sigterm_after_close", tmp_path)
    assert code == -signal.SIGTERM, err
    assert "survived" not in out
    assert _entries(tmp_path) == ["0"]


def test_a_second_sigterm_ends_the_process_after_the_commit(tmp_path: Path) -> None:
    started = time.monotonic()
    code, out, err = _run("second_sigterm", tmp_path)
    assert code == -signal.SIGTERM, err
    assert "survived" not in out and time.monotonic() - started < 30
    assert "Second SIGTERM" in err
    assert _entries(tmp_path) == ["0", "1"]
