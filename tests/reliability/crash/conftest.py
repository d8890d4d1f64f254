"""Kill-point budget, the plan of kills per scenario, the shared crash session and its figures.

The number of kill points: `--kill-points N` (when pytest is pointed at this folder, e.g.
`pytest tests/reliability/crash --kill-points 200`), else `JAXPOINT_KILL_POINTS`, else 40.
`JAXPOINT_KILL_SEED` changes the seed (default 5). `JAXPOINT_KILL_LOG=<file>` writes one
JSON line per kill.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from reliability.crash import harness, plan

DEFAULT_KILL_POINTS = 40
_SESSION = pytest.StashKey[harness.CrashSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kill-points", type=int, default=None,
                     help="SIGKILL points of the crash harness (default 40, or "
                          "JAXPOINT_KILL_POINTS)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "crash_scenario(name): a crash-harness test; gets the chains of kills "
                   "planned for scenario `name` as its `chain` argument")


def kill_points(config: pytest.Config) -> int:
    option = config.getoption("--kill-points", default=None)
    return int(option if option is not None else
               os.environ.get("JAXPOINT_KILL_POINTS", DEFAULT_KILL_POINTS))


def kill_seed() -> int:
    return int(os.environ.get("JAXPOINT_KILL_SEED", "5"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("crash_scenario")
    if marker is None or "chain" not in metafunc.fixturenames:
        return
    chains = plan.plan_chains(kill_points(metafunc.config), seed=kill_seed())[marker.args[0]]
    metafunc.parametrize("chain", chains, ids=[f"chain{c.index}" for c in chains])


@pytest.fixture(scope="session")
def crash_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    session = harness.CrashSession(tmp_path_factory.mktemp("crash-children"))
    request.config.stash[_SESSION] = session
    yield session
    session.close()
    if log := os.environ.get("JAXPOINT_KILL_LOG"):
        with open(log, "a") as f:
            for record in session.records:
                f.write(json.dumps(record.to_json()) + "\n")


@pytest.fixture
def chain_rng(chain: plan.Chain):
    return np.random.default_rng([kill_seed(), chain.scenario_index, chain.index])


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "run"
    directory.mkdir()
    return directory


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None:
        for line in harness.summary_lines(session.records):
            terminalreporter.write_line(line)
