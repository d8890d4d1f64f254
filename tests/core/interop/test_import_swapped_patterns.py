"""The call patterns of published Orbax users, as one body run with `ocp = orbax.checkpoint`
and with `ocp = jaxpoint.core`, each library reading what the other wrote:

- Flax's checkpointing guide: `flax.training.orbax_utils.save_args_from_target` /
  `restore_args_from_target` (which build Orbax's own args objects), a legacy manager
  over a `PyTreeCheckpointer`, restoring a `TrainState`;
- MaxText `load_params_from_path`: a legacy `Checkpointer.restore(path, item={"params":
  abstract}, transforms={}, restore_args={"params": construct_restore_args(abstract)})`
  that reads one subtree of a full training state onto new shardings;
- MaxText's `create_orbax_checkpoint_manager`: named items, Orbax's policy classes, and
  the option fields (`todelete_full_path=None`, `logger=None`) it passes at their defaults;
- MaxText single-replica restore: `register_type_handler(jax.Array,
  SingleReplicaArrayHandler(...), override=True)` and `SingleReplicaArrayRestoreArgs`;
- `construct_restore_args(target, sharding_tree)` (Flax, AXLearn);
- partial restore with `PLACEHOLDER`, renaming with `Transform(original_key=...)` and
  `Transform(use_fallback=True)` (Orbax's partial-restore guide);
- a Flax `TrainState` saved with a Python-int step restored onto `jax.eval_shape` (int32);
- `metadata(path).item_metadata` mapped to an abstract target (Orbax's restore guide);
- a manager with policies from `ocp.checkpoint_managers`, a step prefix and a handler
  registry, followed by `checkpoint_utils.checkpoints_iterator` (evaluators); user policies
  subclassing `checkpoint_managers.SaveDecisionPolicy` / `PreservationPolicy`;
- the tree helpers, `test_utils.erase_and_create_empty` and the args registry, which
  must return what Orbax's return.

The differences the migration guide lists on purpose are checked at the end, on both.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorstore as ts
from core.interop.interop_support import P, make_mesh, ocp, orbax_ocp
from jax.sharding import NamedSharding

LIBRARIES = {"orbax": orbax_ocp, "jaxpoint": ocp}
DIRECTIONS = [("orbax", "jaxpoint"), ("jaxpoint", "orbax")]
SDS = jax.ShapeDtypeStruct


def _sharding(spec: P | None = None) -> NamedSharding:
    spec = P("data", "model") if spec is None else spec  # P() is falsy: compare with None
    return NamedSharding(make_mesh((4, 2), ("data", "model")), spec)


def _train_state(step: int) -> dict[str, Any]:
    w = jax.device_put(jnp.arange(32.0).reshape(8, 4) * step, _sharding())
    return {"params": {"dense": {"kernel": w, "bias": jnp.full((4,), float(step))}},
            "opt_state": {"mu": {"dense": {"kernel": jnp.zeros((8, 4)), "bias": jnp.zeros(4)}}},
            "step": step}


def _save_pytree(lib: ModuleType, path: Path, tree: Any) -> None:
    with lib.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(path, args=lib.args.PyTreeSave(tree))


def _values(tree: Any) -> list[Any]:
    return [np.asarray(leaf).tolist() if not isinstance(leaf, str) else leaf
            for leaf in jax.tree.leaves(tree)]


# ---------------------------------------------------------------- the swapped-import bodies


def maxtext_load_params(ocp: ModuleType, path: Path) -> Any:
    """MaxText's `load_params_from_path`: only `params`, onto the model's shardings."""
    abstract = {"dense": {"kernel": SDS((8, 4), jnp.float32, sharding=_sharding(P(None, "model"))),
                          "bias": SDS((4,), jnp.float32, sharding=_sharding(P()))}}
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(
        restore_concurrent_gb=1, use_ocdbt=True, use_zarr3=True))
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract)
    return checkpointer.restore(path, item={"params": abstract}, transforms={},
                                restore_args={"params": restore_args})


def maxtext_single_replica_restore(ocp: ModuleType, path: Path) -> Any:
    """MaxText's single-replica restore: one replica reads, the others get a broadcast."""
    target = {"w": SDS((8, 4), jnp.float32, sharding=_sharding(P(None, "model")))}
    replica = NamedSharding(jax.sharding.Mesh(make_mesh((4, 2), ("data", "model")).devices[:1],
                                              ("data", "model")), P(None, "model"))
    with ocp.test_utils.global_type_handler_registry_context():
        ocp.type_handlers.register_type_handler(
            jax.Array, ocp.type_handlers.SingleReplicaArrayHandler(
                replica_axis_index=0, broadcast_memory_limit_bytes=1024 * 1024 * 1000),
            override=True)
        restore_args = jax.tree.map(lambda x: ocp.type_handlers.SingleReplicaArrayRestoreArgs(
            sharding=x.sharding, single_replica_sharding=replica, global_shape=x.shape,
            dtype=x.dtype), target)
        with ocp.PyTreeCheckpointer() as checkpointer:
            return checkpointer.restore(path, args=ocp.args.PyTreeRestore(
                item=target, restore_args=restore_args))


def _flax_checkpoint() -> dict[str, Any]:
    import optax
    from flax.training import train_state

    params = {"dense": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}}
    state = train_state.TrainState.create(apply_fn=lambda p, x: x, params=params,
                                          tx=optax.sgd(0.1))
    return {"model": state, "config": {"dimensions": np.array([5, 3]), "name": "dense"},
            "data": [jnp.full((4,), 2.0)]}


def flax_guide_save(ocp: ModuleType, directory: Path) -> None:
    """Flax's checkpointing guide: args from `flax.training.orbax_utils` (built by Orbax)."""
    from flax.training import orbax_utils

    checkpoint = _flax_checkpoint()
    checkpointer = ocp.PyTreeCheckpointer()
    save_args = orbax_utils.save_args_from_target(checkpoint)
    checkpointer.save(directory / "single_save", checkpoint, save_args=save_args)
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    manager = ocp.CheckpointManager(directory / "managed", checkpointer, options)
    for step in range(5):
        manager.save(step, checkpoint, save_kwargs={"save_args": save_args})
    manager.wait_until_finished()
    manager.close()


def flax_guide_restore(ocp: ModuleType, directory: Path) -> tuple[Any, Any, list[int]]:
    from flax.training import orbax_utils

    target = _flax_checkpoint()
    target["model"] = target["model"].replace(params=jax.tree.map(jnp.zeros_like,
                                                                  target["model"].params))
    checkpointer = ocp.PyTreeCheckpointer()
    restored = checkpointer.restore(directory / "single_save", item=target,
                                    restore_args=orbax_utils.restore_args_from_target(target))
    manager = ocp.CheckpointManager(directory / "managed", checkpointer,
                                    ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    latest = manager.restore(manager.latest_step(), items=target)
    steps = manager.all_steps()
    manager.close()
    return restored, latest, steps


def maxtext_manager(ocp: ModuleType, directory: Path) -> Any:
    """MaxText's `create_orbax_checkpoint_manager`, with the fields it passes at defaults."""
    policies = ocp.checkpoint_managers
    return ocp.CheckpointManager(
        directory, item_names=("items",),
        item_handlers={"items": ocp.PyTreeCheckpointHandler(use_ocdbt=True, use_zarr3=True)},
        options=ocp.CheckpointManagerOptions(
            create=True, enable_async_checkpointing=True,
            save_decision_policy=policies.ContinuousCheckpointingPolicy(),
            preservation_policy=policies.LatestN(2),
            async_options=ocp.AsyncOptions(timeout_secs=3600),
            todelete_subdir=None, todelete_full_path=None),
        logger=None)


def maxtext_save(ocp: ModuleType, directory: Path, steps: list[int]) -> None:
    with maxtext_manager(ocp, directory) as manager:
        for step in steps:
            state = _train_state(step)
            manager.save(step, args=ocp.args.Composite(items=ocp.args.PyTreeSave(
                item=state, save_args=jax.tree.map(lambda _: ocp.SaveArgs(), state))))
            # ContinuousCheckpointingPolicy skips a step while the last save is in flight.
            manager.wait_until_finished()


def maxtext_restore_latest(ocp: ModuleType, directory: Path) -> tuple[int, Any]:
    abstract = jax.tree.map(lambda x: SDS(x.shape, x.dtype, sharding=x.sharding)
                            if isinstance(x, jax.Array) else x, _train_state(0))
    with maxtext_manager(ocp, directory) as manager:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.Composite(items=ocp.args.PyTreeRestore(
            item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))))
        return step, restored["items"]


def restore_onto_a_sharding_tree(ocp: ModuleType, path: Path) -> Any:
    target = {"params": {"dense": {"kernel": SDS((8, 4), jnp.float32), "bias": np.zeros(4)}},
              "step": 0}
    shardings = {"params": {"dense": {"kernel": _sharding(P("model", "data")), "bias": None}},
                 "step": None}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target, shardings)
    with ocp.PyTreeCheckpointer() as checkpointer:
        return checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            target, restore_args=restore_args, partial_restore=True))


def partial_restore_and_renames(ocp: ModuleType, path: Path) -> tuple[Any, Any]:
    """Orbax's partial-restore guide: skip a subtree, rename a key, keep a new leaf."""
    skipped = {"params": {"dense": {"kernel": np.zeros((8, 4), np.float32),
                                    "bias": np.zeros(4, np.float32)}},
               "opt_state": {"mu": {"dense": {"kernel": ocp.PLACEHOLDER,
                                              "bias": ocp.PLACEHOLDER}}},
               "step": 0}
    restore_args = jax.tree.map(
        lambda leaf: leaf if leaf is ocp.PLACEHOLDER else ocp.RestoreArgs(restore_type=type(leaf)),
        skipped)
    with ocp.PyTreeCheckpointer() as checkpointer:
        partial = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            skipped, restore_args=restore_args))
        renamed_target = {"model": {"w": np.zeros((8, 4), np.float32)},
                          "ema": {"w": np.full((8, 4), -1.0, np.float32)}, "step": 0}
        transforms = {r"model/w": ocp.Transform(original_key="params/dense/kernel"),
                      r"ema/w": ocp.Transform(use_fallback=True)}
        renamed = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            renamed_target, restore_args=jax.tree.map(
                lambda leaf: ocp.RestoreArgs(restore_type=type(leaf)), renamed_target),
            transforms=transforms))
    return partial, renamed


def flax_train_state_onto_eval_shape(ocp: ModuleType, path: Path) -> Any:
    """`step` saved as a Python int (int64), restored onto `jax.eval_shape(create_state)`."""
    abstract = jax.eval_shape(lambda: {"step": 0, "params": {"w": jnp.ones((2, 3))}})
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path, abstract)


def abstract_from_metadata(ocp: ModuleType, path: Path) -> tuple[dict[str, Any], Any]:
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree_metadata = checkpointer.metadata(path).item_metadata
        kernel = tree_metadata.tree["params"]["dense"]["kernel"]
        described = {"shape": kernel.shape, "dtype": str(kernel.dtype),
                     "sharding": kernel.sharding.to_jax_sharding(),
                     "custom": tree_metadata.custom_metadata}
        abstract = jax.tree.map(lambda m: SDS(m.shape, m.dtype,
                                              sharding=m.sharding.to_jax_sharding()),
                                {"params": tree_metadata["params"]})
        restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
            abstract, partial_restore=True))
    return described, restored


def managed_run(ocp: ModuleType, directory: Path) -> list[int]:
    """A run with Orbax's policy classes, a step prefix and a handler registry."""
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=False, step_prefix="ckpt", step_format_fixed_length=3,
        async_options=ocp.options.AsyncOptions(timeout_secs=600),
        multiprocessing_options=ocp.options.MultiprocessingOptions(primary_host=0),
        save_decision_policy=policies.AnySavePolicy([
            policies.FixedIntervalPolicy(3), policies.SpecificStepsPolicy([4])]),
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(n=2), policies.EveryNSteps(interval_steps=6)]))
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add("state", ocp.args.StandardSave)
    registry.add("state", ocp.args.StandardRestore)
    registry.add("config", ocp.args.JsonSave, ocp.JsonCheckpointHandler)
    registry.add("config", ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    with ocp.CheckpointManager(directory, options=options, handler_registry=registry) as manager:
        for step in range(13):
            manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave({"w": np.full(3, float(step))}),
                config=ocp.args.JsonSave({"step": step})))
        return sorted(manager.all_steps())


def read_managed_run(ocp: ModuleType, directory: Path) -> tuple[Any, ...]:
    name_format = ocp.path.step.standard_name_format(step_prefix="ckpt",
                                                     step_format_fixed_length=3)
    evaluated = list(ocp.checkpoint_utils.checkpoints_iterator(
        directory, timeout=0, seconds_to_sleep=0.1, step_prefix="ckpt",
        step_format_fixed_length=3))
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add("state", ocp.args.StandardRestore)
    registry.add("config", ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    options = ocp.CheckpointManagerOptions(step_prefix="ckpt", step_format_fixed_length=3)
    with ocp.CheckpointManager(directory, options=options, handler_registry=registry) as manager:
        restored = manager.restore(9, args=ocp.args.Composite(
            state=ocp.args.StandardRestore({"w": np.zeros(3)}), config=ocp.args.JsonRestore()))
        steps = sorted(manager.all_steps())
        assert isinstance(manager.metadata(9), ocp.metadata.StepMetadata)
        item_metadata = manager.item_metadata(9)["state"]  # Orbax's TreeMetadata
        assert item_metadata.tree["w"].shape == item_metadata["w"].shape == (3,)
        assert isinstance(item_metadata["w"], ocp.metadata.ArrayMetadata)
        assert isinstance(manager.metadata(), ocp.metadata.RootMetadata)
    return (steps, evaluated, ocp.path.step.build_step_path(directory, name_format, 9).name,
            sorted(ocp.utils.checkpoint_steps(directory)),
            _values(restored["state"]), dict(restored.config))


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize(("writer", "reader"), DIRECTIONS)
def test_maxtext_restores(tmp_path: Path, writer: str, reader: str) -> None:
    _save_pytree(LIBRARIES[writer], tmp_path / "state", _train_state(3))
    params = maxtext_load_params(LIBRARIES[reader], tmp_path / "state")
    assert list(params) == ["params"] and sorted(params["params"]["dense"]) == ["bias", "kernel"]
    kernel = params["params"]["dense"]["kernel"]
    assert kernel.sharding == _sharding(P(None, "model"))
    np.testing.assert_array_equal(kernel, np.arange(32.0).reshape(8, 4) * 3)
    np.testing.assert_array_equal(params["params"]["dense"]["bias"], np.full(4, 3.0))

    _save_pytree(LIBRARIES[writer], tmp_path / "w", {"w": _train_state(2)["params"]["dense"]["kernel"]})
    replicated = maxtext_single_replica_restore(LIBRARIES[reader], tmp_path / "w")
    assert replicated["w"].sharding == _sharding(P(None, "model"))
    np.testing.assert_array_equal(replicated["w"], np.arange(32.0).reshape(8, 4) * 2)


@pytest.mark.parametrize(("writer", "reader"), DIRECTIONS)
def test_maxtext_manager(tmp_path: Path, writer: str, reader: str) -> None:
    maxtext_save(LIBRARIES[writer], tmp_path, [1, 2, 3])
    step, items = maxtext_restore_latest(LIBRARIES[reader], tmp_path)
    assert step == 3 and sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "3"]
    kernel = items["params"]["dense"]["kernel"]
    assert kernel.sharding.is_equivalent_to(_sharding(), 2) and int(items["step"]) == 3
    np.testing.assert_array_equal(kernel, np.arange(32.0).reshape(8, 4) * 3)
    np.testing.assert_array_equal(items["opt_state"]["mu"]["dense"]["bias"], np.zeros(4))


@pytest.mark.parametrize(("writer", "reader"), DIRECTIONS)
def test_flax_checkpointing_guide(tmp_path: Path, writer: str, reader: str) -> None:
    flax_guide_save(LIBRARIES[writer], tmp_path)
    restored, latest, steps = flax_guide_restore(LIBRARIES[reader], tmp_path)
    assert sorted(steps) == [3, 4]
    expected = _flax_checkpoint()
    for found in (restored, latest):
        assert type(found["model"]) is type(expected["model"])
        assert _values(found["model"].params) == _values(expected["model"].params)
        assert int(found["model"].step) == 0 and found["config"]["name"] == "dense"
        assert _values(found["data"]) == [[2.0] * 4]


@pytest.mark.parametrize(("writer", "reader"), DIRECTIONS)
def test_sharding_tree_placeholders_and_transforms(tmp_path: Path, writer: str,
                                                   reader: str) -> None:
    _save_pytree(LIBRARIES[writer], tmp_path / "state", _train_state(5))
    restored = restore_onto_a_sharding_tree(LIBRARIES[reader], tmp_path / "state")
    kernel = restored["params"]["dense"]["kernel"]
    assert kernel.sharding == _sharding(P("model", "data"))
    np.testing.assert_array_equal(kernel, np.arange(32.0).reshape(8, 4) * 5)
    assert isinstance(restored["params"]["dense"]["bias"], np.ndarray)
    assert restored["step"] == 5 and "opt_state" not in restored

    lib = LIBRARIES[reader]
    partial, renamed = partial_restore_and_renames(lib, tmp_path / "state")
    assert partial["opt_state"]["mu"]["dense"]["kernel"] is lib.PLACEHOLDER
    np.testing.assert_array_equal(partial["params"]["dense"]["kernel"],
                                  np.arange(32.0).reshape(8, 4) * 5)
    np.testing.assert_array_equal(renamed["model"]["w"], np.arange(32.0).reshape(8, 4) * 5)
    np.testing.assert_array_equal(renamed["ema"]["w"], np.full((8, 4), -1.0))
    assert sorted(renamed) == ["ema", "model", "step"] and renamed["step"] == 5


@pytest.mark.parametrize(("writer", "reader"), DIRECTIONS)
def test_train_state_step_and_metadata(tmp_path: Path, writer: str, reader: str) -> None:
    with LIBRARIES[writer].StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "flax", {"step": 0, "params": {"w": np.ones((2, 3), np.float32)}})
        checkpointer.wait_until_finished()
    state = flax_train_state_onto_eval_shape(LIBRARIES[reader], tmp_path / "flax")
    assert state["step"].dtype == np.int32 and int(state["step"]) == 0  # cast to the target

    with LIBRARIES[writer].PyTreeCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", args=LIBRARIES[writer].args.PyTreeSave(
            _train_state(4), custom_metadata={"run": "a"}))
    described, restored = abstract_from_metadata(LIBRARIES[reader], tmp_path / "state")
    assert described == {"shape": (8, 4), "dtype": "float32", "sharding": _sharding(),
                         "custom": {"run": "a"}}
    assert restored["params"]["dense"]["kernel"].sharding == _sharding()
    np.testing.assert_array_equal(restored["params"]["dense"]["kernel"],
                                  np.arange(32.0).reshape(8, 4) * 4)


@pytest.mark.parametrize(("writer", "reader"), DIRECTIONS)
def test_managed_run_with_policies_registry_and_evaluator(tmp_path: Path, writer: str,
                                                          reader: str) -> None:
    kept = managed_run(LIBRARIES[writer], tmp_path)
    # FixedInterval(3) or step 4 saves 0, 3, 4, 6, 9, 12; LatestN(2) or every 6th keeps these.
    assert kept == [0, 6, 9, 12], f"{writer} kept {kept}"
    steps, evaluated, name, listed, state, config = read_managed_run(LIBRARIES[reader], tmp_path)
    assert steps == listed == kept and evaluated == [12] and name == "ckpt_009"
    assert state == [[9.0, 9.0, 9.0]] and config == {"step": 9}


def custom_policies_run(ocp: ModuleType, directory: Path) -> list[int]:
    """User policies subclassing Orbax's policy protocol classes."""
    policies = ocp.checkpoint_managers

    class EveryThirdStep(policies.SaveDecisionPolicy):
        def should_save(self, step, previous_steps, *, context):
            return step.step % 3 == 0 or context.reached_preemption

    class KeepEvenOrUnranked(policies.PreservationPolicy):
        def should_preserve(self, checkpoints, *, context):
            return [info.step % 2 == 0 or info.metrics is None for info in checkpoints]

    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False,
                                           save_decision_policy=EveryThirdStep(),
                                           preservation_policy=KeepEvenOrUnranked())
    with ocp.CheckpointManager(directory, options=options) as manager:
        for step in range(10):
            manager.save(step, args=ocp.args.StandardSave({"x": np.ones(2)}),
                         metrics={"loss": 1.0 / (step + 1)})
        return sorted(manager.all_steps())


def test_custom_policies_on_orbax_protocol_classes(tmp_path: Path) -> None:
    assert custom_policies_run(orbax_ocp, tmp_path / "orbax") == [0, 6]
    assert custom_policies_run(ocp, tmp_path / "jaxpoint") == [0, 6]


def test_tree_helpers_return_what_orbax_returns(tmp_path: Path) -> None:
    state = {"params": {"dense": {"kernel": np.ones((2, 3)), "bias": np.zeros(3)}},
             "opt": [{"mu": np.ones(1)}, {"nu": np.full(1, 2.0)}], "step": 4}
    _save_pytree(orbax_ocp, tmp_path / "by_orbax", state)
    _save_pytree(ocp, tmp_path / "by_jaxpoint", state)

    def helpers(lib: ModuleType) -> dict[str, Any]:
        flat = lib.tree.to_flat_dict(state, sep="/")
        return {
            "flat": sorted(flat), "flat_tuples": sorted(lib.utils.to_flat_dict(state)),
            "unflat": lib.utils.from_flat_dict(lib.utils.to_flat_dict(state), state),
            "serialized": lib.tree.serialize_tree(state),
            "deserialized": lib.tree.deserialize_tree(lib.tree.serialize_tree(state), state),
            "names": lib.tree.get_param_names(state),
            "struct": lib.utils.to_shape_dtype_struct(jnp.ones((2, 2), jnp.bfloat16)),
            "empty": sorted(p.name for p in lib.test_utils.erase_and_create_empty(
                tmp_path / lib.__name__).iterdir()),
            "args": lib.args.get_registered_args_cls(lib.PyTreeCheckpointHandler()),
            "has_args": lib.args.has_registered_args(lib.JsonCheckpointHandler),
            "json_handler": lib.args.get_registered_handler_cls(lib.args.JsonSave).__name__,
            "primary": lib.utils.is_primary_host(0),
            "synced": lib.utils.sync_global_processes("tree_helpers"),
            "ocdbt": [lib.type_handlers.is_ocdbt_checkpoint(tmp_path / f"by_{writer}")
                      for writer in ("orbax", "jaxpoint")] + [
                          lib.type_handlers.is_ocdbt_checkpoint(tmp_path)],
        }

    ours, theirs = helpers(ocp), helpers(orbax_ocp)
    assert ours["ocdbt"] == [True, True, False] and ours["primary"] is True
    assert [(k, type(v)) for k, v in ours.items()] == [(k, type(v)) for k, v in theirs.items()]
    assert ours["args"] == (ocp.args.PyTreeSave, ocp.args.PyTreeRestore)
    assert theirs["args"] == (orbax_ocp.args.PyTreeSave, orbax_ocp.args.PyTreeRestore)
    ours.pop("args"), theirs.pop("args")
    for key in ("unflat", "serialized", "deserialized"):
        assert jax.tree.structure(ours[key]) == jax.tree.structure(theirs[key]), key
        assert _values(ours[key]) == _values(theirs[key]), key
        ours.pop(key), theirs.pop(key)
    assert ours == theirs


def _array_format(item: Path, name: str) -> tuple[str, bool, bool]:
    """(zarr driver, zstd used, crc32c used) of a stored array, read with TensorStore."""
    for driver in ("zarr3", "zarr"):
        spec = {"driver": driver, "kvstore": {"driver": "ocdbt", "base": f"file://{item}"},
                "path": name}
        try:
            metadata = json.dumps(ts.open(spec).result().spec().to_json()["metadata"])
        except ValueError:
            continue
        return driver, "zstd" in metadata, "crc32c" in metadata
    raise AssertionError(f"Expected a zarr or zarr3 array {name!r} in {item}.")


def test_differences_the_migration_guide_lists(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows of "What differs on purpose" that a single process can show, on both."""
    def save_twice(lib: ModuleType, directory: Path) -> tuple[Any, ...]:
        handler_before = signal.getsignal(signal.SIGTERM)
        options = lib.CheckpointManagerOptions(enable_async_checkpointing=False)
        with lib.CheckpointManager(directory, options=options) as manager:
            handler_during = signal.getsignal(signal.SIGTERM)
            manager.save(2, args=lib.args.StandardSave({"x": np.ones(2)}))
            outcomes = []
            for step, force in ((2, False), (2, True), (1, False)):
                try:
                    outcomes.append(manager.save(step, args=lib.args.StandardSave(
                        {"x": np.zeros(2)}), force=force))
                except Exception as error:  # noqa: BLE001 - the outcome is what is compared
                    outcomes.append(type(error).__name__)
        with lib.StandardCheckpointer() as checkpointer:
            plain = checkpointer.restore(directory / "2" / "default", {"x": SDS((2,), jnp.float64)})
            try:
                skipped = checkpointer.restore(directory / "2" / "default", {"x": lib.PLACEHOLDER})
                outcomes.append(skipped["x"] is lib.PLACEHOLDER)
            except ValueError:
                outcomes.append("ValueError")
        return (outcomes, handler_during is not handler_before,
                (directory / "2" / "_CHECKSUMS").exists(), type(plain["x"]),
                _array_format(directory / "2" / "default", "x"))

    theirs = save_twice(orbax_ocp, tmp_path / "orbax")
    ours = save_twice(ocp, tmp_path / "jaxpoint")
    # An existing step: Orbax skips it (False) or, with force=True, raises; jaxpoint raises.
    # A new step older than the latest: both skip it. Then PLACEHOLDER in StandardCheckpointer.
    assert theirs[0] == [False, "StepAlreadyExistsError", False, "ValueError"]
    assert ours[0] == ["StepAlreadyExistsError", "StepAlreadyExistsError", False, True]
    assert (theirs[1], ours[1]) == (False, True)  # the SIGTERM handler while a manager is open
    assert (theirs[2], ours[2]) == (False, True)  # _CHECKSUMS
    # A ShapeDtypeStruct target without a sharding: Orbax gives numpy, jaxpoint a jax.Array.
    assert (theirs[3], issubclass(ours[3], jax.Array)) == (np.ndarray, True)
    # Default array format: Orbax zarr2 + zstd; jaxpoint zarr3, uncompressed, crc32c per chunk.
    assert (theirs[4], ours[4]) == (("zarr", True, False), ("zarr3", False, True))
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:  # Orbax reads past _CHECKSUMS
        assert checkpointer.restore(tmp_path / "jaxpoint" / "2" / "default")["x"].tolist() == [1, 1]
    # The getting-started guide: Orbax needs absolute paths, jaxpoint takes relative ones.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="should be absolute"), \
            orbax_ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save("relative", args=orbax_ocp.args.PyTreeSave({"x": np.ones(2)}))
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save("relative", args=ocp.args.PyTreeSave({"x": np.ones(2)}))
    assert (tmp_path / "relative" / "_METADATA").is_file()
    # Extensions the guides name: Orbax refuses args= in StandardCheckpointer, and one
    # PLACEHOLDER for a whole subtree; jaxpoint takes both.
    with pytest.raises(TypeError):
        orbax_ocp.StandardCheckpointer().save(tmp_path / "a", args=orbax_ocp.args.StandardSave({}))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "b", args=ocp.args.StandardSave({"x": {"y": np.ones(2)}}))
        checkpointer.wait_until_finished()
    for lib in (orbax_ocp, ocp):
        with lib.PyTreeCheckpointer() as checkpointer:
            whole = lib.args.PyTreeRestore({"x": lib.PLACEHOLDER}, restore_args={"x": lib.PLACEHOLDER})
            if lib is orbax_ocp:
                with pytest.raises(ValueError, match="tree structures do not match"):
                    checkpointer.restore(tmp_path / "b", args=whole)
            else:
                assert checkpointer.restore(tmp_path / "b", args=whole) == {"x": ocp.PLACEHOLDER}
