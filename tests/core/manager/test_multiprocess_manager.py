"""The manager across two real processes joined by jax.distributed: every process saves its
shards, the primary commits and deletes, and all of them list and restore the same steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpoint.core import args, multihost
from jaxpoint.core.manager import (
    CheckpointManager,
    CheckpointManagerOptions,
    wait_for_new_checkpoint,
)
from jaxpoint.core.testing.multiprocess import run_processes


def _global_array(step: int) -> jax.Array:
    mesh = Mesh(np.asarray(jax.devices()).reshape(4, 2), ("data", "model"))
    sharding = NamedSharding(mesh, P("data", "model"))
    values = np.arange(32, dtype=np.float32).reshape(8, 4) + step
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])


def _train_on_two_processes(directory: str) -> dict[str, Any]:
    options = CheckpointManagerOptions(max_to_keep=2, best_fn=lambda m: m["loss"],
                                       best_mode="min", step_prefix="ckpt")
    report: dict[str, Any] = {"process": multihost.process_index()}
    with CheckpointManager(directory, options, metadata={"job": "two"}) as manager:
        for step, loss in ((1, 0.5), (2, 0.1), (3, 0.4), (4, 0.3)):
            manager.save(step, args=args.StandardSave({"w": _global_array(step)}),
                         metrics={"loss": loss})
        manager.wait_until_finished()
        report["steps"] = manager.all_steps()
        report["best"] = manager.best_step()
        target = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32,
                                            sharding=_global_array(0).sharding)}
        restored = manager.restore(2, args=args.StandardRestore(target))["w"]
        report["restored_local"] = [np.asarray(s.data).tolist() for s in restored.addressable_shards]
        report["expected_local"] = [np.asarray(s.data).tolist()
                                    for s in _global_array(2).addressable_shards]
        manager.delete(4)
        report["after_delete"] = manager.all_steps()
    with wait_for_new_checkpoint(directory, timeout=0, step_prefix="ckpt") as newest:
        report["evaluator_step"] = newest  # process 0 looked, every process got it
    return report


def test_two_processes_save_keep_restore_and_delete(tmp_path: Path) -> None:
    reports = run_processes(_train_on_two_processes, num_processes=2, devices_per_process=4,
                            timeout_s=120, args=(str(tmp_path),))
    for report in reports:
        assert report["steps"] == [2, 4] and report["best"] == 2
        assert report["restored_local"] == report["expected_local"]
        assert report["after_delete"] == [2] and report["evaluator_step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_READ_LEASES", "_WRITER_LOCK", "ckpt_2",
                                                       "metadata"]
