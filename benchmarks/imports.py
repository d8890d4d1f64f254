"""Import cost, two ways, from the same fresh interpreters.

- wall: `python -X importtime -c "import jax; import LIBRARY"` from start to exit.
- added: what importing LIBRARY costs once jax is loaded, from `-X importtime`: the
  cumulative time of the top-level imports that follow `jax`. Far less noisy than a
  difference of two wall times on a busy machine. For plain `import jax`, jax's own time.

Variants run interleaved, after one untimed round (so that bytecode caches exist).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

STATEMENTS = {
    "jax": "import jax",
    "orbax": "import jax; import orbax.checkpoint",
    "jaxpoint": "import jax; import jaxpoint.core",
}
_TOP_LEVEL = re.compile(r"^import time:\s+\d+\s+\|\s+(\d+)\s+\| (\S.*)$")


def _added_s(importtime_log: str, *, is_jax_only: bool) -> float:
    entries = [m.groups() for m in map(_TOP_LEVEL.match, importtime_log.splitlines()) if m]
    names = [name for _, name in entries]
    if "jax" not in names:
        raise RuntimeError("Expected a top-level `jax` entry in the -X importtime output.")
    start = names.index("jax")
    chosen = entries[start:start + 1] if is_jax_only else entries[start + 1:]
    return sum(int(microseconds) for microseconds, _ in chosen) / 1e6


def time_import(variant: str, *, cwd: str, env: dict[str, str],
                timeout_s: float) -> dict[str, float]:
    """{"seconds": wall time, "added_s": import cost after jax}; raises on failure."""
    statement = STATEMENTS[variant]
    start = time.perf_counter()
    completed = subprocess.run([sys.executable, "-X", "importtime", "-c", statement], cwd=cwd,
                               env=env, capture_output=True, text=True, timeout=timeout_s,
                               check=False)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        last_line = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"`{statement}` exited with status {completed.returncode}: {last_line}")
    return {"seconds": seconds, "added_s": _added_s(completed.stderr, is_jax_only=variant == "jax")}
