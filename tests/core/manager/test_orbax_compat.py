"""Both directions against the real orbax-checkpoint 0.12.8: what one manager writes, the
other lists (all_steps, latest_step, best_step) and restores, bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as orbax_ocp
from core.interop.interop_support import (
    P,
    abstract_of,
    assert_leaves_match_expected,
    assert_trees_bit_equal,
    flatten,
    load_case,
    make_mesh,
)
from jax.sharding import NamedSharding
from jaxpoint.core import args
from jaxpoint.core.manager import (
    CheckpointManager,
    CheckpointManagerOptions,
    wait_for_new_checkpoint,
)

LOSSES = {10: 0.9, 20: 0.3, 30: 0.5, 40: 0.4}
NAMING = {"step_prefix": "ckpt", "step_format_fixed_length": 6}


def _loss(metrics: dict[str, Any]) -> float:
    return metrics["loss"]


def _state(step: int) -> dict[str, Any]:
    mesh = make_mesh((4, 2), ("data", "model"))
    return {
        "params": {"w": jax.device_put(jnp.arange(64.0, dtype=jnp.float32).reshape(16, 4) * step,
                                       NamedSharding(mesh, P("data", "model"))),
                   "b": jnp.full((3,), step, jnp.bfloat16)},
        "step": jnp.asarray(step, jnp.int32),
        "host": np.arange(5, dtype=np.int16) + step,
    }


def _orbax_options(**extra: Any) -> Any:
    return orbax_ocp.CheckpointManagerOptions(
        max_to_keep=2, best_fn=_loss, best_mode="min", enable_async_checkpointing=False,
        **NAMING, **extra)


def _orbax_args(step: int) -> Any:
    return orbax_ocp.args.Composite(state=orbax_ocp.args.StandardSave(_state(step)),
                                    config=orbax_ocp.args.JsonSave({"lr": 0.1, "step": step}))


def _orbax_restore_args(step: int) -> Any:
    return orbax_ocp.args.Composite(
        state=orbax_ocp.args.StandardRestore(abstract_of(_state(step))),
        config=orbax_ocp.args.JsonRestore())


def _jaxpoint_write(directory: Path, steps: list[int]) -> CheckpointManager:
    options = CheckpointManagerOptions(max_to_keep=2, best_fn=_loss, best_mode="min", **NAMING)
    manager = CheckpointManager(directory, options, item_names=("state", "config"),
                                metadata={"model": "mlp", "seed": 3})
    for step in steps:
        manager.save(step, args=args.Composite(state=args.StandardSave(_state(step)),
                                               config=args.JsonSave({"lr": 0.1, "step": step})),
                     metrics={"loss": LOSSES[step]}, custom_metadata={"commit": f"c{step}"})
    manager.wait_until_finished()
    return manager


def test_orbax_lists_and_restores_what_jaxpoint_writes(tmp_path: Path) -> None:
    with _jaxpoint_write(tmp_path, [10, 20, 30]) as ours:
        listing = (ours.all_steps(), ours.latest_step(), ours.best_step())
    assert listing == ([20, 30], 30, 20)
    with orbax_ocp.CheckpointManager(tmp_path, options=_orbax_options()) as theirs:
        assert (theirs.all_steps(), theirs.latest_step(), theirs.best_step()) == listing
        restored = theirs.restore(20, args=_orbax_restore_args(20))
        assert_trees_bit_equal(restored["state"], _state(20), where="orbax restoring step 20")
        assert restored["config"] == {"lr": 0.1, "step": 20}
        assert theirs.metadata().custom_metadata == {"model": "mlp", "seed": 3}
        step_metadata = theirs.metadata(30)
        assert step_metadata.custom_metadata == {"commit": "c30"}
        assert step_metadata.metrics == {"loss": 0.5} and theirs.metrics(20) == {"loss": 0.3}
    with orbax_ocp.CheckpointManager(tmp_path, options=_orbax_options()) as without_args:
        everything = without_args.restore(30)  # handlers from _CHECKPOINT_METADATA
        assert sorted(everything) == ["config", "metrics", "state"]
        assert flatten(everything["state"])["step"] == 30


def test_orbax_restores_a_single_default_item(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path) as ours:  # defaults: async, every step, keep all
        for step in (0, 1):
            ours.save(step, args=args.StandardSave(_state(step)))
    with orbax_ocp.CheckpointManager(tmp_path) as theirs:
        assert theirs.all_steps() == [0, 1] and theirs.latest_step() == 1
        restored = theirs.restore(1, args=orbax_ocp.args.StandardRestore(abstract_of(_state(1))))
    assert_trees_bit_equal(restored, _state(1), where="orbax restoring the default item")


def test_jaxpoint_lists_restores_and_continues_what_orbax_writes(tmp_path: Path) -> None:
    with orbax_ocp.CheckpointManager(tmp_path, options=_orbax_options(),
                                     item_names=("state", "config"),
                                     metadata={"model": "mlp"}) as theirs:
        for step in (10, 20, 30):
            theirs.save(step, args=_orbax_args(step), metrics={"loss": LOSSES[step]},
                        custom_metadata={"commit": f"c{step}"})
        listing = (theirs.all_steps(), theirs.latest_step(), theirs.best_step())
    options = CheckpointManagerOptions(max_to_keep=2, best_fn=_loss, best_mode="min", **NAMING)
    with CheckpointManager(tmp_path, options) as ours:
        assert (ours.all_steps(), ours.latest_step(), ours.best_step()) == listing == ([20, 30], 30, 20)
        restored = ours.restore(20, args=args.Composite(
            state=args.StandardRestore(abstract_of(_state(20))), config=None))
        assert_trees_bit_equal(restored["state"], _state(20), where="jaxpoint restoring step 20")
        assert restored["config"] == {"lr": 0.1, "step": 20}
        assert ours.metrics(30) == {"loss": 0.5} and ours.metadata(20).metrics == {"loss": 0.3}
        assert ours.metadata().custom_metadata == {"model": "mlp"}
        assert ours.metadata(30).custom_metadata == {"commit": "c30"}
        assert sorted(ours.restore(30)) == ["config", "metrics", "state"]
        ours.save(40, args=args.Composite(state=args.StandardSave(_state(40)),
                                          config=args.JsonSave({"lr": 0.1, "step": 40})),
                  metrics={"loss": LOSSES[40]})
        ours.wait_until_finished()
        assert ours.all_steps() == [20, 40]  # the same choice orbax would make
    with wait_for_new_checkpoint(tmp_path, timeout=0, seconds_to_sleep=0.01, **NAMING) as step:
        assert step == 40
    with orbax_ocp.CheckpointManager(tmp_path, options=_orbax_options()) as theirs_again:
        assert (theirs_again.all_steps(), theirs_again.best_step()) == ([20, 40], 20)
        assert theirs_again.restore(40, args=_orbax_restore_args(40))["config"]["step"] == 40


def test_jaxpoint_reads_the_shared_orbax_manager_fixture(tmp_path: Path) -> None:
    case = load_case("manager_composite_best")
    expected, how = case.expected, case.expected["restore"]
    directory = case.copy_to(tmp_path)
    options = CheckpointManagerOptions(
        read_only=True, best_fn=lambda m: m[how["best_metric"]], best_mode=how["best_mode"],
        step_prefix=how["step_prefix"], step_format_fixed_length=how["step_format_fixed_length"])
    with CheckpointManager(directory, options) as ours:
        assert ours.all_steps() == expected["all_steps"]
        assert ours.latest_step() == expected["latest_step"]
        assert ours.best_step() == expected["best_step"]
        for step, leaves in expected["state_by_step"].items():
            restored = ours.restore(int(step))
            assert_leaves_match_expected(restored["state"], leaves, prefix="state.",
                                         where=f"fixture step {step}")
        best = ours.restore(expected["best_step"])
        for name, value in expected["json_items"].items():
            assert best[name] == value
