"""Interop with orbax-checkpoint 0.12.8 across processes, in both directions.

In the 2-process launch, orbax (imported in each child) saves the state from two
processes and jaxpoint restores it there, and orbax restores in two processes what two
jaxpoint processes saved; here, one process with 8 devices does both again.
"""

from __future__ import annotations

from core.multiprocess import state, workloads
from core.multiprocess.checks import Launch, assert_restored
from jax.sharding import PartitionSpec as P

_ONE_PROCESS_SPECS = {"weights": P("data", "model"), "rows": P("model"), "bias": P(),
                      "table": P()}


def test_orbax_restores_in_two_processes_what_two_jaxpoint_processes_saved(
    two_processes: Launch,
) -> None:
    assert_restored(two_processes.check("orbax_restores"))


def test_orbax_restores_in_one_process_what_two_jaxpoint_processes_saved(
    two_processes: Launch,
) -> None:
    mesh = state.mesh_of((4, 2))
    assert_restored([workloads.orbax_restore(two_processes.root / "sharded", mesh,
                                             _ONE_PROCESS_SPECS)])


def test_jaxpoint_restores_in_two_processes_what_two_orbax_processes_saved(
    two_processes: Launch,
) -> None:
    assert two_processes.check("orbax_save") == [None, None]
    assert_restored(two_processes.check("restore_orbax_written"))
    # orbax's own layout: one OCDBT database per process, merged at the item's root.
    databases = sorted(p.name for p in (two_processes.root / "orbax-written").glob("ocdbt.process_*"))
    assert databases == ["ocdbt.process_0", "ocdbt.process_1"]


def test_jaxpoint_restores_in_one_process_what_two_orbax_processes_saved(
    two_processes: Launch,
) -> None:
    mesh = state.mesh_of((2, 4))
    assert_restored([workloads.restore_orbax_written(two_processes.root / "orbax-written",
                                                     mesh, _ONE_PROCESS_SPECS)])
