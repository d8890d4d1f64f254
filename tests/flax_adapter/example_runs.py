"""Running the training examples as real processes and reading their losses."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120
# Compiled programs shared by the runs (JAX's persistent cache): most of a run's start-up
# is compiling the same small programs again. The results do not depend on it.
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="jaxpoint-examples-jax-cache-")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = _COMPILATION_CACHE
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def _run(script: str, directory: Path, *, steps: int, delay_s: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / script), "--directory", str(directory), "--steps",
         str(steps), "--step-delay-s", str(delay_s)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env())


def _records(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def start_uninterrupted(script: str, directory: Path, *, steps: int) -> subprocess.Popen:
    """Starts a run that nothing interrupts; it runs beside the interrupted one."""
    return _run(script, directory, steps=steps)


def uninterrupted_losses(process: subprocess.Popen) -> dict[int, float]:
    out, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, err
    return {r["step"]: r["loss"] for r in _records(out.splitlines()) if "loss" in r}


def interrupted_losses(script: str, directory: Path, *, steps: int,
                       sigterm_after_step: int) -> tuple[dict[int, float], int]:
    """Losses of a run sent SIGTERM after `sigterm_after_step`, then resumed in a new process.

    The first process must exit 0 having saved the step it stopped at; the second
    resumes after it. Returns the losses by step (the resumed run's where both ran) and
    the step the first run stopped at.
    """
    first = _run(script, directory, steps=steps, delay_s=0.2)
    lines = []
    assert first.stdout is not None
    for line in first.stdout:
        lines.append(line)
        record = json.loads(line)
        if record.get("step") == sigterm_after_step:
            first.send_signal(signal.SIGTERM)
            break
    rest, err = first.communicate(timeout=TIMEOUT_S)
    assert first.returncode == 0, f"the preempted run exited {first.returncode}: {err}"
    records = _records(lines + rest.splitlines())
    stops = [r["stopped_at"] for r in records if "stopped_at" in r]
    assert stops, f"the preempted run never reported should_stop: {records}"
    losses = {r["step"]: r["loss"] for r in records if "loss" in r}

    second = _run(script, directory, steps=steps)
    out, err = second.communicate(timeout=TIMEOUT_S)
    assert second.returncode == 0, err
    resumed = {r["step"]: r["loss"] for r in _records(out.splitlines()) if "loss" in r}
    assert min(resumed) == stops[0] + 1, f"resumed at {min(resumed)}, stopped at {stops[0]}"
    losses.update(resumed)
    return losses, stops[0]
