"""benchmarks/gpu.py runs end to end (on CPU here: a smoke test, no timing is judged)."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_gpu_benchmark_runs_and_restores_exactly(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "packages" / "core" / "src"), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--gib", "0.02", "--leaves", "4", "--reps", "1",
         "--libraries", "jaxpoint,orbax", "--read-ahead-mib", "64", "--chunk-mib", "1",
         "--directory", str(tmp_path / "scratch"), "--out", str(out)],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    report = json.loads((out / "gpu.json").read_text())
    trials = report["trials"]
    assert not [t for t in trials if "error" in t], trials
    restores = [t for t in trials if t["case"].startswith("restore_") and "exact" in t]
    # jaxpoint, orbax, the read-ahead and the chunked variants, cold and warm.
    assert len(restores) == 8
    assert all(t["exact"] and t["on_device"] for t in restores)
    saves = {t["who"] for t in trials if t["case"] == "async_save"}
    assert saves == {"jaxpoint", "orbax", "jaxpoint, 1 MiB chunks"}
    assert "async save blocks" in (out / "gpu.md").read_text()
