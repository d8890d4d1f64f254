"""One INFO line per save and per restore, the save's figures in `_CHECKPOINT_METADATA`,
a warning when arrays saved on missing devices land on one device, and clear errors for
save args given to a restore."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from jaxpoint.core import args
from jaxpoint.core.checkpointers import AsyncCheckpointer, Checkpointer
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.handlers import CompositeCheckpointHandler, StandardCheckpointHandler
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.testing.multiprocess import run_processes

_LOGGER = "jaxpoint.core.checkpointers"
_MIB = 1024 * 1024


def _state() -> dict[str, np.ndarray]:
    return {"w": np.ones((_MIB // 4,), np.float32), "b": np.zeros((256,), np.float32)}


def _lines(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == _LOGGER and r.levelno == logging.INFO and r.getMessage().startswith(start)]


def test_a_manager_save_and_restore_log_one_line_each(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jaxpoint")
    options = CheckpointManagerOptions(enable_async_checkpointing=True)
    with CheckpointManager(tmp_path, options) as manager:
        manager.save(7, args=args.StandardSave(_state()))
        manager.wait_until_finished()
        restored = manager.restore(7)
    np.testing.assert_array_equal(restored["w"], _state()["w"])
    (saved,) = _lines(caplog, "Saved ")
    assert saved.startswith(f"Saved step 7 ({tmp_path / '7'}): 1.0 MiB in 1 item(s); save() "
                            "blocked ")
    assert "committed after" in saved and "MiB/s" in saved
    (loaded,) = _lines(caplog, "Restored ")
    assert loaded.startswith(f"Restored step 7 ({tmp_path / '7'}): 1.0 MiB in 1 item(s) in ")
    assert loaded.endswith("shardings from the checkpoint.")


def test_the_save_figures_are_recorded_in_the_step_metadata(tmp_path: Path) -> None:
    with AsyncCheckpointer(StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=args.StandardSave(_state()))
    recorded = json.loads((tmp_path / "ckpt" / "_CHECKPOINT_METADATA").read_text())
    figures = recorded["performance_metrics"]
    assert figures["saved_bytes"] == _MIB + 1024
    assert isinstance(figures["checkpointer_blocking_duration_secs"], float)
    assert 0 <= figures["checkpointer_blocking_duration_secs"] * 1e6 <= figures["write_duration_us"]
    assert figures["write_bytes_per_sec"] > 0


def test_orbax_reads_the_recorded_figures(tmp_path: Path) -> None:
    import orbax.checkpoint as orbax

    with CheckpointManager(tmp_path, CheckpointManagerOptions(enable_async_checkpointing=False)) as m:
        m.save(1, args=args.StandardSave(_state()))
    with orbax.CheckpointManager(tmp_path) as manager:
        statistics = manager.metadata(1).performance_metrics
    assert statistics.checkpointer_blocking_duration_secs > 0


def test_a_restore_onto_a_sharded_target_names_the_target(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    mesh = jax.make_mesh((4,), ("x",))
    target = {"w": jax.ShapeDtypeStruct((_MIB // 4,), np.float32,
                                        sharding=NamedSharding(mesh, PartitionSpec("x"))),
              "b": jax.ShapeDtypeStruct((256,), np.float32,
                                        sharding=NamedSharding(mesh, PartitionSpec()))}
    checkpointer = Checkpointer(StandardCheckpointHandler())
    checkpointer.save(tmp_path / "ckpt", args=args.StandardSave(_state()))
    caplog.set_level(logging.INFO, logger="jaxpoint")
    checkpointer.restore(tmp_path / "ckpt", args=args.StandardRestore(target))
    (loaded,) = _lines(caplog, "Restored ")
    assert loaded.endswith("shardings from the target.")


def _restore_on_one_device(path: str) -> list[str]:
    import logging as child_logging

    from jaxpoint.core import checkpointers, handlers

    records: list[str] = []

    class Keep(child_logging.Handler):
        def emit(self, record: child_logging.LogRecord) -> None:
            records.append(record.getMessage())

    child_logging.getLogger("jaxpoint").addHandler(Keep(level=child_logging.WARNING))
    restored = checkpointers.Checkpointer(handlers.StandardCheckpointHandler()).restore(path)
    assert len(restored["w"].sharding.device_set) == 1
    return records


def test_a_restore_without_target_onto_fewer_devices_warns(tmp_path: Path) -> None:
    mesh = jax.make_mesh((8,), ("x",))
    state = {"w": jax.device_put(np.arange(64, dtype=np.float32),
                                 NamedSharding(mesh, PartitionSpec("x")))}
    Checkpointer(StandardCheckpointHandler()).save(tmp_path / "ckpt", args=args.StandardSave(state))
    (records,) = run_processes(_restore_on_one_device, num_processes=1, devices_per_process=1,
                               timeout_s=60, args=(str(tmp_path / "ckpt"),),
                               initialize_distributed=False)
    (warning,) = records
    assert warning.startswith("1 array(s) in ")
    assert "saved on devices this process does not have (it sees 1)" in warning
    assert "jax.ShapeDtypeStruct(shape, dtype, sharding=...)" in warning


def test_save_args_given_to_a_restore_name_the_restore_args(tmp_path: Path) -> None:
    checkpointer = Checkpointer(StandardCheckpointHandler())
    checkpointer.save(tmp_path / "ckpt", args=args.StandardSave(_state()))
    with pytest.raises(InvalidArgumentError,
                       match=r"Expected restore args, got the save args StandardSave\. To fix, "
                             r"pass ocp\.args\.StandardRestore\(target\)"):
        checkpointer.restore(tmp_path / "ckpt", args=args.StandardSave(_state()))
    composite = Checkpointer(CompositeCheckpointHandler())
    composite.save(tmp_path / "two", args=args.Composite(state=args.StandardSave(_state())))
    with pytest.raises(InvalidArgumentError,
                       match=r"restore args for item 'state', got the save args StandardSave"):
        composite.restore(tmp_path / "two", args=args.Composite(state=args.StandardSave(_state())))


def test_a_named_items_manager_suggests_composite_restore_args(tmp_path: Path) -> None:
    options = CheckpointManagerOptions(enable_async_checkpointing=False)
    with CheckpointManager(tmp_path, options, item_names=("state",)) as manager:
        manager.save(1, args=args.Composite(state=args.StandardSave(_state())))
        with pytest.raises(InvalidArgumentError,
                           match=r"args\.Composite\(state=args\.StandardRestore\(target\)\)"):
            manager.restore(1, args=args.StandardRestore())
