"""Typed random keys whose shards span processes, through a plain CheckpointManager.

Each launch saves a batch of rbg keys split along the mesh axis whose rows live on
different processes (and a replicated threefry key), then restores them as saved and
split along the other axis: every process must get a typed key array on the global
sharding (not a local copy) with its shards' key data bit for bit.
"""

from __future__ import annotations

from core.multiprocess.checks import Launch
from jax.sharding import PartitionSpec as P


def test_typed_keys_split_across_processes_round_trip(launch: Launch) -> None:
    for process, result in enumerate(launch.check("typed_keys")):
        if isinstance(result, BaseException):
            raise AssertionError(f"process {process} raised") from result
        assert result == {str(P("data")): {"batch": "", "single": ""},
                          str(P("model")): {"batch": "", "single": ""}}, (process, result)
