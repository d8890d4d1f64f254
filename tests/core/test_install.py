"""`pip install ./packages/core` into a fresh environment with only the runtime
dependencies saves and restores; every declared entry point runs."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Console scripts the packages declare. A new one must be added here and run below.
EXPECTED_SCRIPTS: dict[str, set[str]] = {"jaxpoint-core": set()}

_ROUND_TRIP = textwrap.dedent("""
    import sys
    import numpy as np
    import jaxpoint.core as ocp
    state = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "step": 3}
    with ocp.CheckpointManager(sys.argv[1]) as manager:
        manager.save(3, args=ocp.args.StandardSave(state))
    with ocp.CheckpointManager(sys.argv[1], ocp.CheckpointManagerOptions(read_only=True)) as m:
        restored = m.restore(3)
    assert np.array_equal(restored["w"], state["w"]) and restored["step"] == 3
    print("round trip ok from", ocp.__file__)
""")


def _run(command: list[str], **kwargs) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_environment_and_round_trips(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          str(ROOT / "packages" / "core"), "-w", str(wheels)])
    (wheel,) = wheels.glob("jaxpoint_core-*.whl")
    # The runtime dependencies at this environment's versions, so pip reuses its cache.
    pins = tmp_path / "constraints.txt"
    pins.write_text(_run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"]))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", str(wheel), "-c", str(pins)])
    installed = _run([str(python), "-m", "pip", "list", "--format=freeze"]).lower()
    for development_only in ("orbax-checkpoint", "moto", "pytest", "boto3"):
        assert development_only not in installed
    script = tmp_path / "round_trip.py"
    script.write_text(_ROUND_TRIP)
    out = _run([str(python), str(script), str(tmp_path / "ckpt")], cwd=tmp_path,
               env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert "round trip ok from" in out and str(venv) in out


def test_every_declared_entry_point_runs() -> None:
    for distribution, expected in EXPECTED_SCRIPTS.items():
        scripts = {ep.name: ep for ep in importlib.metadata.distribution(distribution).entry_points
                   if ep.group == "console_scripts"}
        assert set(scripts) == expected, (
            f"{distribution} declares console scripts {sorted(scripts)}; list them in "
            "EXPECTED_SCRIPTS so that this test runs each")
        for entry_point in scripts.values():
            module, _, attribute = entry_point.value.partition(":")
            _run([sys.executable, "-c", f"import sys; from {module} import {attribute} as main; "
                  "sys.argv = ['x', '--help']; main()"])
