"""Every public name of orbax-checkpoint 0.12.8 resolves under jaxpoint.core, or the
migration guide says why not. The guide's table is read here, so the two cannot drift."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

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


@pytest.fixture(scope="module")
def resolution() -> dict:
    """`{"resolves": {name: bool}, "missing_from_dir": [...]}`, each namespace touched first
    in a fresh process (see resolve_names.py)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, str(HERE / "resolve_names.py"), str(NAMES_FILE)],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, f"resolve_names.py failed:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


def unexplained(names: list[str], resolves: dict[str, bool], gaps: dict[str, str]) -> list[str]:
    """Names that neither resolve nor have a row in the table."""
    return [n for n in names if not resolves[n] and _covering_row(n, gaps) is None]


def stale_rows(resolves: dict[str, bool], gaps: dict[str, str]) -> list[str]:
    """Rows for names (or `ns.*` namespaces) that resolve after all."""
    return sorted(row for row in gaps if resolves.get(row[:-2] if row.endswith(".*") else row))


def test_every_orbax_name_resolves_or_is_documented(resolution):
    names = _orbax_names()
    assert len(names) > 400, f"Expected the orbax 0.12.8 name list in {NAMES_FILE}."
    gaps = _documented_gaps()
    resolves = resolution["resolves"]
    undocumented = unexplained(names, resolves, gaps)
    assert not undocumented, (
        f"Expected every orbax 0.12.8 name to resolve under jaxpoint.core or to be listed in "
        f"{GUIDE.name}; {len(undocumented)} are neither: {undocumented}. To fix, provide them "
        "or add a row with the reason to the table."
    )
    stale = stale_rows(resolves, gaps)
    assert not stale, (
        f"Expected the table in {GUIDE.name} to list only names jaxpoint lacks, but these "
        f"resolve now: {stale}. To fix, delete their rows."
    )
    unknown = sorted(row for row in gaps if row not in resolves and not any(
        n == row[:-2] or n.startswith(row[:-1]) for n in names if row.endswith(".*")))
    assert not unknown, (
        f"Expected every row of the table in {GUIDE.name} to name an orbax 0.12.8 name from "
        f"{NAMES_FILE.name}, got {unknown}. To fix, correct the spelling or delete the row."
    )


def test_dir_of_each_namespace_lists_what_resolves(resolution):
    """`dir()` (tab completion, `from ocp.x import *` tools) agrees with attribute access."""
    assert resolution["missing_from_dir"] == [], (
        f"Expected dir() of each jaxpoint namespace to list its Orbax names, but these resolve "
        f"without being listed: {resolution['missing_from_dir']}. To fix, add them to the "
        "namespace's __all__."
    )


def test_the_check_fails_on_an_unexplained_gap(resolution):
    """The comparison above can fail, on the real resolution of this checkout: dropping any
    documented row leaves its names unexplained; a row for a name that resolves is stale."""
    names, gaps, resolves = _orbax_names(), _documented_gaps(), resolution["resolves"]
    assert unexplained(names, resolves, gaps) == []
    for row in ("handlers.CompositeResults", "future.*", "tree.merge_trees"):
        fewer = {r: why for r, why in gaps.items() if r != row}
        expected = [n for n in names if n == row or (row.endswith(".*") and (
            n == row[:-2] or n.startswith(row[:-1])))]
        assert expected and unexplained(names, resolves, fewer) == expected, row
    assert stale_rows(resolves, {**gaps, "handlers.PyTreeCheckpointHandler": "x"}) == [
        "handlers.PyTreeCheckpointHandler"]
    # A namespace that stops resolving is reported with every name in it.
    broken = {**resolves, **{n: False for n in names if n.startswith("type_handlers")}}
    assert "type_handlers.register_type_handler" in unexplained(names, broken, gaps)
