"""Every public name of orbax-checkpoint 0.12.8 resolves under jaxpoint.core, or the
migration guide says why not. The guide's table is read here, so the two cannot drift."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
NAMES_FILE = HERE / "orbax_0_12_8_names.txt"
GUIDE = HERE.parents[2] / "docs" / "orbax-compatibility.md"
TABLE_HEADING = "## Orbax names jaxpoint does not provide"


def _orbax_names() -> list[str]:
    return NAMES_FILE.read_text().split()


def _documented_gaps() -> dict[str, str]:
    """`{name or "ns.*": reason}` from the guide's table."""
    text = GUIDE.read_text()
    assert TABLE_HEADING in text, f"Expected the heading {TABLE_HEADING!r} in {GUIDE}."
    section = text.split(TABLE_HEADING, 1)[1]
    rows = re.findall(r"^\| `([^`]+)` \| (.+?) \|$", section, flags=re.MULTILINE)
    gaps = dict(rows)
    assert len(gaps) == len(rows), f"Expected each name once in the table of {GUIDE}."
    assert all(reason.strip() for reason in gaps.values()), "Every row needs a reason."
    return gaps


def _covering_row(name: str, gaps: dict[str, str]) -> str | None:
    if name in gaps:
        return name
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        pattern = ".".join(parts[:depth]) + ".*"
        if pattern in gaps:
            return pattern
    return None


def _resolved_in_fresh_process() -> dict[str, bool]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, str(HERE / "resolve_names.py"), str(NAMES_FILE)],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, f"resolve_names.py failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def test_every_orbax_name_resolves_or_is_documented():
    names = _orbax_names()
    assert len(names) > 400, f"Expected the orbax 0.12.8 name list in {NAMES_FILE}."
    gaps = _documented_gaps()
    resolved = _resolved_in_fresh_process()
    undocumented = [n for n in names if not resolved[n] and _covering_row(n, gaps) is None]
    assert not undocumented, (
        f"Expected every orbax 0.12.8 name to resolve under jaxpoint.core or to be listed in "
        f"{GUIDE.name}; {len(undocumented)} are neither: {undocumented}. To fix, provide them "
        "or add a row with the reason to the table."
    )
    stale = sorted(row for row in gaps if not row.endswith(".*") and resolved.get(row))
    stale += sorted(row for row in gaps if row.endswith(".*") and resolved.get(row[:-2]))
    assert not stale, (
        f"Expected the table in {GUIDE.name} to list only names jaxpoint lacks, but these "
        f"resolve now: {stale}. To fix, delete their rows."
    )
    unknown = sorted(row for row in gaps if row not in resolved and not any(
        n == row[:-2] or n.startswith(row[:-1]) for n in names if row.endswith(".*")))
    assert not unknown, (
        f"Expected every row of the table in {GUIDE.name} to name an orbax 0.12.8 name from "
        f"{NAMES_FILE.name}, got {unknown}. To fix, correct the spelling or delete the row."
    )


def test_a_gap_missing_from_the_table_is_reported():
    """The check above can fail: dropping one documented row leaves that name unexplained."""
    gaps = _documented_gaps()
    row = next(iter(gaps))
    del gaps[row]
    name = row[:-2] if row.endswith(".*") else row
    assert _covering_row(name, gaps) is None
