"""The multi-process benchmark scripts run end to end at a tiny size (no timing is judged):
each restores what its cases promise, so a change to the code they drive cannot leave them
broken until the next full benchmark run."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(module: str, *arguments: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "packages" / "core" / "src"), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run([sys.executable, "-m", module, *arguments], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_emergency_benchmark_restores_the_step_each_case_promises(tmp_path):
    report = _run("benchmarks.emergency", "--mib", "8", "--reps", "1", "--dir", str(tmp_path))
    # jaxpoint rebuilds the newer local step after losing a host's folder; orbax's manager
    # keeps no local copy on replica 0 and falls back to the older persistent step.
    assert report["steps"] == {
        "jaxpoint|local intact": 1, "orbax|local intact": 1,
        "jaxpoint|local, one lost": 1, "orbax|local, one lost": 0,
        "jaxpoint|persistent": 0, "orbax|persistent": 0}
    assert all(len(times) == 1 for times in report["times_s"].values()), report


def test_single_replica_benchmark_reports_its_read_and_broadcast_phases():
    report = _run("benchmarks.single_replica", "--mib", "8", "--reps", "1")
    times = report["times_s"]
    for temperature in ("cold", "warm"):
        for key in (f"all-read {temperature}", f"single-replica {temperature}",
                    f"read {temperature}", f"broadcast {temperature}"):
            assert len(times[key]) == 1 and times[key][0] > 0, (key, times)
