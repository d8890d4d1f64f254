"""Orbax's namespaces used the way published projects use them, with the import swapped."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def test_import_stays_cheap_and_namespaces_load_on_first_use():
    code = ("import sys, jaxpoint.core as ocp; heavy = 'tensorstore' in sys.modules; "
            "ocp.handlers.PyTreeCheckpointHandler; ocp.path.step.standard_name_format; "
            "print(heavy, 'tensorstore' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=120, check=True)
    assert result.stdout.split() == ["False", "True"]


def _mesh() -> Mesh:
    return Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))


def test_construct_restore_args_with_a_sharding_tree(tmp_path):
    """MaxText / Flax pattern: restore onto new shardings given as a separate tree."""
    mesh = _mesh()
    state = {"params": {"w": jnp.arange(32.0).reshape(8, 4)}, "step": 3,
             "table": np.arange(6, dtype=np.int32)}
    ocp.PyTreeCheckpointer().save(tmp_path / "c", args=ocp.args.PyTreeSave(state))
    target = {"params": {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32)}, "step": 0,
              "table": np.zeros(6, np.int32)}
    shardings = {"params": {"w": NamedSharding(mesh, PartitionSpec("data", "model"))},
                 "step": None, "table": None}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target, shardings)
    w_args = restore_args["params"]["w"]
    assert isinstance(w_args, ocp.ArrayRestoreArgs)
    assert w_args.global_shape == (8, 4) and w_args.sharding == shardings["params"]["w"]
    assert restore_args["step"] == ocp.RestoreArgs(restore_type=int)
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(
        target, restore_args=restore_args))
    assert restored["params"]["w"].sharding == shardings["params"]["w"]
    np.testing.assert_array_equal(restored["params"]["w"], np.arange(32.0).reshape(8, 4))
    assert restored["step"] == 3 and isinstance(restored["step"], int)
    np.testing.assert_array_equal(restored["table"], np.arange(6))
    # A ShapeDtypeStruct without a sharding restores as numpy, as in Orbax.
    plain = ocp.checkpoint_utils.construct_restore_args(
        {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}, set_global_shape=False)
    assert plain["w"] == ocp.RestoreArgs(restore_type=np.ndarray, dtype=jnp.float32)
    with pytest.raises(TypeError, match="got object"):
        ocp.checkpoint_utils.construct_restore_args({"x": object()})


def test_construct_restore_args_from_saved_metadata(tmp_path):
    ocp.PyTreeCheckpointer().save(tmp_path / "c", args=ocp.args.PyTreeSave(
        {"w": jnp.ones((2, 2)), "name": "run-1"}))
    metadata = ocp.PyTreeCheckpointer().metadata(tmp_path / "c").item_metadata
    args = ocp.checkpoint_utils.construct_restore_args(
        metadata, {"w": NamedSharding(_mesh(), PartitionSpec()), "name": None})
    assert args["w"].global_shape == (2, 2) and args["name"].restore_type is str


def test_step_paths_and_utils_on_a_manager_directory(tmp_path):
    root = ocp.test_utils.erase_and_create_empty(tmp_path / "run")
    (root / "stale").mkdir()
    assert ocp.test_utils.erase_and_create_empty(root) == root and list(root.iterdir()) == []
    options = ocp.CheckpointManagerOptions(step_prefix="ckpt", enable_async_checkpointing=False)
    with ocp.CheckpointManager(root, options=options) as manager:
        for step in (1, 5):
            manager.save(step, args=ocp.args.StandardSave({"x": np.ones(2) * step}))
    tmp = ocp.test_utils.save_fake_tmp_dir(root, 7, "default", step_prefix="ckpt_")
    assert sorted(ocp.utils.checkpoint_steps(root)) == [1, 5]
    assert ocp.utils.is_tmp_checkpoint(tmp) and not ocp.utils.is_tmp_checkpoint(root / "ckpt_5")
    assert ocp.path.step.step_from_checkpoint_name(tmp.name) == 7
    assert [p.name for p in ocp.path.step.all_temporary_paths(root)] == [tmp.name]
    name_format = ocp.path.step.standard_name_format(step_prefix="ckpt",
                                                     step_format_fixed_length=4)
    assert ocp.path.step.build_step_path(root, name_format, 5) == root / "ckpt_0005"
    assert ocp.utils.get_save_directory(5, root, "default", step_prefix="ckpt") == \
        root / "ckpt_5" / "default"
    assert isinstance(name_format, ocp.path.step.NameFormat)
    assert ocp.path.atomicity.COMMIT_SUCCESS_FILE == "commit_success.txt"
    assert ocp.utils.TMP_DIR_SUFFIX == ".orbax-checkpoint-tmp"
    assert ocp.type_handlers.is_ocdbt_checkpoint(root / "ckpt_5" / "default")
    with pytest.raises(ValueError, match="Expected a step folder name"):
        ocp.utils.step_from_checkpoint_name("latest")


def test_record_saved_duration_reports_to_jax_monitoring():
    events = []

    def listener(event, duration_s, **kwargs):
        events.append((event, duration_s))

    jax.monitoring.register_event_duration_secs_listener(listener)
    ocp.utils.record_saved_duration(1000.0)
    ocp.utils.record_saved_duration(1012.5)
    assert ("/jax/checkpoint/write/duration_since_last_checkpoint_secs", 12.5) in events


def test_host_local_pmap_output_becomes_a_global_array():
    replicated = jax.pmap(lambda x: x * 2)(jnp.stack([jnp.arange(3.0)] * jax.local_device_count()))
    global_array = ocp.utils.fully_replicated_host_local_array_to_global_array(replicated)
    assert global_array.shape == (3,) and global_array.sharding.is_fully_replicated
    np.testing.assert_array_equal(global_array, np.arange(3.0) * 2)


def test_handler_registry_and_args_registration():
    save, restore = ocp.args.get_registered_args_cls(ocp.StandardCheckpointHandler())
    assert (save, restore) == (ocp.args.StandardSave, ocp.args.StandardRestore)
    assert ocp.args.get_registered_handler_cls(ocp.args.JsonSave) is ocp.JsonCheckpointHandler
    assert ocp.args.has_registered_args(ocp.PyTreeCheckpointHandler)
    assert not ocp.args.has_registered_args(object)
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add("state", ocp.args.StandardSave)
    registry.add("state", ocp.args.StandardRestore)
    registry.add("meta", ocp.args.JsonSave, ocp.JsonCheckpointHandler)
    assert isinstance(registry.get("state", ocp.args.StandardSave({})),
                      ocp.StandardCheckpointHandler)
    assert registry.has("meta", ocp.args.JsonSave) and not registry.has("meta", ocp.args.JsonRestore)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("state", ocp.args.StandardSave)
    with pytest.raises(KeyError, match="Expected a handler for item='other'"):
        registry.get("other", ocp.args.StandardSave)
    assert set(registry.item_handlers()) == {"state", "meta"}


def test_registry_feeds_a_manager(tmp_path):
    registry = ocp.handlers.create_default_handler_registry(
        state=ocp.StandardCheckpointHandler(), meta=ocp.JsonCheckpointHandler())
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
    with ocp.CheckpointManager(tmp_path, options=options, handler_registry=registry) as manager:
        manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave({"x": np.ones(2)}),
                                                meta=ocp.args.JsonSave({"lr": 0.1})))
        restored = manager.restore(0)
        with pytest.raises(ValueError, match=r"Unknown item name\(s\) \['other'\]"):
            manager.save(1, args=ocp.args.Composite(other=ocp.args.JsonSave({})))
    assert restored["meta"] == {"lr": 0.1}
    with ocp.CheckpointManager(tmp_path, options=options,
                               item_handlers=registry.item_handlers()) as manager:
        assert manager.restore(0)["meta"] == {"lr": 0.1}


@pytest.mark.parametrize(("build", "match"), [
    (lambda d, r: ocp.CheckpointManager(d, handler_registry=r, item_names=["state"]),
     r"Expected either handler_registry or item_names, got both"),
    (lambda d, r: ocp.CheckpointManager(d, ocp.Checkpointer(ocp.StandardCheckpointHandler()),
                                        handler_registry=r),
     r"Expected either handler_registry or checkpointers, got both"),
    (lambda d, r: ocp.CheckpointManager(d, handler_registry=r.item_handlers()),
     r"Expected handler_registry to be a DefaultCheckpointHandlerRegistry, got dict"),
    (lambda d, r: r.add(None, ocp.args.JsonSave, ocp.StandardCheckpointHandler()) or
     ocp.CheckpointManager(d / "run", handler_registry=r),
     r"Expected handler_registry entries for item=None to use the handler registered for "
     r"JsonSave, got StandardCheckpointHandler"),
])
def test_malformed_handler_registry(tmp_path, build, match):
    registry = ocp.handlers.create_default_handler_registry(state=ocp.StandardCheckpointHandler())
    with pytest.raises(ValueError, match=match):
        build(tmp_path, registry)
    assert list(tmp_path.iterdir()) == []


def test_orbax_logger_is_accepted_as_none_only(tmp_path):
    with ocp.CheckpointManager(tmp_path / "a", logger=None) as manager:
        assert manager.all_steps() == []
    with pytest.raises(ValueError, match=r"Expected CheckpointManager\(logger=None\), got "
                                         r"object.*To fix, drop logger="):
        ocp.CheckpointManager(tmp_path / "b", logger=object())
    assert not (tmp_path / "b").exists()


def test_registry_for_any_item_keeps_the_default_handlers(tmp_path):
    """Orbax's single-item form: `registry.add(None, StandardSave)`, then plain args."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    registry.add(None, ocp.args.StandardSave)
    registry.add(None, ocp.args.StandardRestore)
    options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
    with ocp.CheckpointManager(tmp_path, options=options, handler_registry=registry) as manager:
        manager.save(1, args=ocp.args.StandardSave({"x": np.arange(2)}))
        assert manager.restore(1)["x"].tolist() == [0, 1]
    assert (tmp_path / "1" / "default").is_dir()
    registry.add("state", ocp.args.JsonSave)
    with pytest.raises(ValueError, match=r"either named items or entries for any item"):
        ocp.CheckpointManager(tmp_path, handler_registry=registry)


def test_policies_live_at_orbax_paths():
    cm = ocp.checkpoint_managers
    assert cm.LatestN is cm.preservation_policy.LatestN is ocp.LatestN
    assert cm.FixedIntervalPolicy is cm.save_decision_policy.FixedIntervalPolicy
    policy = cm.AnyPreservationPolicy([cm.LatestN(n=2), cm.EveryNSteps(interval_steps=10)])
    options = ocp.CheckpointManagerOptions(preservation_policy=policy)
    assert options.preservation_policy is policy
    assert ocp.checkpoint_manager.CheckpointManager is ocp.CheckpointManager
    assert ocp.options.AsyncOptions is ocp.AsyncOptions


def test_tree_helpers_match_orbax_on_a_flax_style_state():
    state = {"params": {"dense": {"kernel": np.ones((2, 3)), "bias": np.zeros(3)}},
             "opt": ({"mu": np.ones(1)}, None), "step": 4}
    flat = ocp.tree.to_flat_dict(state, sep="/")
    assert flat == {"params/dense/kernel": state["params"]["dense"]["kernel"],
                    "params/dense/bias": state["params"]["dense"]["bias"],
                    "opt/0/mu": state["opt"][0]["mu"], "step": 4}
    assert ocp.utils.from_flat_dict(ocp.utils.to_flat_dict(state), state)["opt"][1] is None
    serialized = ocp.tree.serialize_tree(state, keep_empty_nodes=True)
    assert serialized["opt"] == [{"mu": state["opt"][0]["mu"]}, None]
    json.dumps(jax.tree.map(lambda x: np.asarray(x).tolist(), serialized))
    assert ocp.tree.deserialize_tree(serialized, state, keep_empty_nodes=True)["opt"][1] is None
    assert ocp.tree.get_param_names(state)["params"]["dense"]["kernel"] == "params.dense.kernel"
    struct = ocp.tree.to_shape_dtype_struct(jnp.ones((2, 2), jnp.bfloat16))
    assert struct.shape == (2, 2) and struct.dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="missing"):
        ocp.tree.from_flat_dict({("a",): 1}, {"a": 0, "b": 0})
