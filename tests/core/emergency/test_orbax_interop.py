"""orbax-checkpoint 0.12.8's emergency manager and jaxpoint's restore each other's persistent
checkpoints, in 2 processes x 2 devices (one replica per process).

Both keep the state as the item `default` of a persistent step (orbax's layout); jaxpoint's
JSON items sit beside it and orbax ignores them. What orbax needs on CPU is set up in
`orbax_processes.orbax_setup` (its docstring lists it).
"""

from __future__ import annotations

from core.emergency import orbax_processes as work
from jaxpoint.core.testing.multiprocess import run_processes


def test_each_manager_restores_the_other_ones_persistent_checkpoints(tmp_path):
    reports = run_processes(work.both_directions, num_processes=2, devices_per_process=2,
                            timeout_s=120, args=(str(tmp_path),))
    for report in reports:
        assert report["orbax_step"] == 2 and report["orbax_read"] == []
        assert report["jaxpoint_steps"] == [0, 2] and report["jaxpoint_read"] == []
        assert report["jaxpoint_items"] == []  # orbax's step holds the state only
    written = {p.name for p in (tmp_path / "by-jaxpoint" / "2").iterdir()}
    assert {"_CHECKPOINT_METADATA", "data", "default"} <= written
