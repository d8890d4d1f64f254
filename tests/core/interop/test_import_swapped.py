"""Orbax code with the import swapped: one function body, run once with
`ocp = orbax.checkpoint` and once with `ocp = jaxpoint.core`, each library restoring what
the other wrote. The bodies use Orbax's legacy call forms as published code does: a
manager built from a dict of checkpointers, `save(step, items, save_kwargs)`,
`restore(step, items=..., restore_kwargs=...)`, `best_fn` with saves that carry no
metrics, `Checkpointer.save(path, item, save_args=...)` and
`StandardCheckpointer().restore(path, target, strict=...)`."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.interop.interop_support import (
    P,
    assert_trees_bit_equal,
    make_mesh,
    ocp,
    orbax_ocp,
)
from jax.sharding import NamedSharding

LIBRARIES = {"orbax": orbax_ocp, "jaxpoint": ocp}
DIRECTIONS = [("orbax", "jaxpoint"), ("jaxpoint", "orbax")]
LOSSES = {1: 0.5, 3: 0.2, 4: 0.9}  # steps 2 and 5 are saved without metrics


def _sharding() -> NamedSharding:
    return NamedSharding(make_mesh((4, 2), ("data", "model")), P("data", "model"))


def _state(step: int) -> dict[str, Any]:
    return {"params": {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4) * step, _sharding()),
                       "b": np.arange(3, dtype=np.int16) + step},
            "step": step}


def _arrays(step: int) -> dict[str, jax.Array]:
    return {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4) * step, _sharding()),
            "b": jnp.arange(3, dtype=jnp.bfloat16) + step}


# ---------------------------------------------------------------- the swapped-import bodies


def legacy_manager_run(ocp: ModuleType, directory: Path, *, keep_without_metrics: bool
                       ) -> tuple[list[int], int | None]:
    """A training run written against Orbax's legacy manager API."""
    checkpointers = {"state": ocp.Checkpointer(ocp.PyTreeCheckpointHandler()),
                     "config": ocp.Checkpointer(ocp.JsonCheckpointHandler())}
    options = ocp.CheckpointManagerOptions(
        max_to_keep=2, best_fn=lambda metrics: metrics["loss"], best_mode="min",
        keep_checkpoints_without_metrics=keep_without_metrics)
    manager = ocp.CheckpointManager(directory, checkpointers, options)
    for step in range(1, 6):
        state = _state(step)
        metrics = {"loss": LOSSES[step]} if step in LOSSES else None
        manager.save(step, {"state": state, "config": {"step": step, "lr": 0.1}},
                     save_kwargs={"state": {"save_args": jax.tree.map(
                         lambda _: ocp.SaveArgs(), state)}},
                     metrics=metrics)
    manager.wait_until_finished()
    listing = (manager.all_steps(), manager.best_step())
    manager.close()
    return listing


def legacy_manager_restore(ocp: ModuleType, directory: Path, step: int
                           ) -> tuple[Any, list[int], int | None]:
    """Restores one step with Orbax's legacy `items` / `restore_kwargs`."""
    checkpointers = {"state": ocp.Checkpointer(ocp.PyTreeCheckpointHandler()),
                     "config": ocp.Checkpointer(ocp.JsonCheckpointHandler())}
    options = ocp.CheckpointManagerOptions(max_to_keep=2, best_fn=lambda m: m["loss"],
                                           best_mode="min")
    with ocp.CheckpointManager(directory, checkpointers, options) as manager:
        restore_args = {"params": {"w": ocp.ArrayRestoreArgs(sharding=_sharding()),
                                   "b": ocp.RestoreArgs(restore_type=np.ndarray)},
                        "step": ocp.RestoreArgs(restore_type=int)}
        restored = manager.restore(step, items={"state": _state(0), "config": None},
                                   restore_kwargs={"state": {"restore_args": restore_args}})
        return restored, manager.all_steps(), manager.best_step()


def legacy_checkpointer_save(ocp: ModuleType, directory: Path) -> None:
    state = _state(7)
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
        checkpointer.save(directory / "pytree", state,
                          save_args=jax.tree.map(lambda _: ocp.SaveArgs(), state))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / "standard", _arrays(7))


def legacy_checkpointer_restore(ocp: ModuleType, directory: Path) -> tuple[Any, Any]:
    target = _state(0)
    restore_args = jax.tree.map(lambda leaf: ocp.ArrayRestoreArgs(sharding=leaf.sharding)
                                if isinstance(leaf, jax.Array) else ocp.RestoreArgs(), target)
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
        pytree = checkpointer.restore(directory / "pytree", item=target,
                                      restore_args=restore_args)
    abstract = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
        leaf.shape, leaf.dtype, sharding=leaf.sharding), _arrays(0))
    with ocp.StandardCheckpointer() as checkpointer:
        standard = checkpointer.restore(directory / "standard", abstract, strict=True)
    return pytree, standard


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("keep_without_metrics", [False, True])
@pytest.mark.parametrize(("writer", "reader"), DIRECTIONS)
def test_legacy_manager_with_dict_of_checkpointers(tmp_path: Path, writer: str, reader: str,
                                                   keep_without_metrics: bool) -> None:
    listing = legacy_manager_run(LIBRARIES[writer], tmp_path,
                                 keep_without_metrics=keep_without_metrics)
    # Orbax's BestN: the 2 best by loss (3, then 1), plus the steps without metrics
    # when keep_checkpoints_without_metrics; best_step ranks only steps with metrics.
    kept = [1, 2, 3, 5] if keep_without_metrics else [1, 3]
    assert listing == (kept, 3), f"{writer} kept {listing}"
    restored, steps, best = legacy_manager_restore(LIBRARIES[reader], tmp_path, 3)
    assert (steps, best) == (kept, 3), f"{reader} lists what {writer} wrote as {steps}, {best}"
    assert dict(restored["config"]) == {"step": 3, "lr": 0.1}
    assert_trees_bit_equal(restored["state"], _state(3), where=f"{writer} -> {reader}")
    assert restored["state"]["params"]["w"].sharding.is_equivalent_to(_sharding(), 2)
    assert (tmp_path / "1" / "metrics" / "metrics").is_file()
    if keep_without_metrics:  # saved without metrics: no metrics item, as Orbax writes it
        assert (tmp_path / "5").is_dir() and not (tmp_path / "5" / "metrics").exists()


@pytest.mark.parametrize(("writer", "reader"), DIRECTIONS)
def test_legacy_checkpointer_forms(tmp_path: Path, writer: str, reader: str) -> None:
    legacy_checkpointer_save(LIBRARIES[writer], tmp_path)
    pytree, standard = legacy_checkpointer_restore(LIBRARIES[reader], tmp_path)
    assert_trees_bit_equal(pytree, _state(7), where=f"{writer} -> {reader} (Checkpointer)")
    assert_trees_bit_equal(standard, _arrays(7),
                           where=f"{writer} -> {reader} (StandardCheckpointer)")
    assert pytree["params"]["w"].sharding.is_equivalent_to(_sharding(), 2)
