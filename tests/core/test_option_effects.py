"""Every field of every args/options class changes behaviour or raises (issue 10, part 1).

`FIELDS` classifies each field: a test in this file that sets it to a non-default value
and checks the effect or the error, or another test file that sets it (checked to name
the field). A field added to any args/options class fails
`test_every_field_is_classified` until it is listed here.
"""

import dataclasses
import inspect
import pathlib

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core import args as args_module
from jaxpoint.core.checkpointers import options as checkpointer_options
from jaxpoint.core.emergency import options as emergency_options
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.handlers import leaf_args
from jaxpoint.core.handlers.host_copies import is_pinned
from jaxpoint.core.handlers.pytree_save import stage_tree
from jaxpoint.core.manager import options as manager_options
from jaxpoint.core.storage import storage_options

TESTS = pathlib.Path(__file__).resolve().parents[1]
HERE = "tests/core/test_option_effects.py"
TRANSFORMS = "tests/core/handlers/test_transforms.py"
STORAGE = "tests/core/storage/test_storage_options.py"
EMERGENCY = "tests/core/emergency/test_checkpoint_manager.py"
OPTION_MODULES = (args_module, checkpointer_options, manager_options, leaf_args, storage_options,
                  emergency_options)

# (class, field) -> the test file that sets the field and checks its effect or its error.
FIELDS: dict[tuple[str, str], str] = {
    **{("emergency.LocalCheckpointOptions", f): EMERGENCY for f in (
        "save_interval_steps", "max_to_keep", "should_save_fn", "save_decision_policy",
        "preservation_policy")},
    **{("emergency.PersistentCheckpointOptions", f): EMERGENCY for f in (
        "save_interval_steps", "max_to_keep", "keep_period", "should_save_fn",
        "save_decision_policy", "preservation_policy", "best_fn", "best_mode")},
    ("emergency.MultiprocessingOptions", "coordination_timeout_secs"): EMERGENCY,
    **{("emergency.CheckpointManagerOptions", f): EMERGENCY for f in (
        "local", "persistent", "replica_axis_index", "step_name_format", "cleanup_tmp_directories",
        "enable_async_checkpointing", "async_options", "multiprocessing_options",
        "single_host_load_and_broadcast")},
    **{("ArrayRestore", f): "tests/core/interop/test_read_orbax_written.py" for f in ("item", "restore_args")},
    ("ArraySave", "item"): "tests/core/handlers/test_other_handlers.py",
    ("ArraySave", "save_args"): HERE,
    **{("ArrayRestoreArgs", f): "tests/core/handlers/test_pytree_handler.py"
       for f in ("dtype", "mesh", "mesh_axes", "sharding", "shape", "strict")},
    **{("ArrayRestoreArgs", f): "tests/core/interop/interop_support.py" for f in ("restore_type", "global_shape")},
    ("AsyncOptions", "timeout_secs"): "tests/core/manager/test_manager_save_restore.py",
    ("AsyncOptions", "post_finalization_callback"): "tests/reliability/crash/child.py",
    ("AsyncOptions", "create_directories_asynchronously"): HERE,
    **{("CheckpointManagerOptions", f): "tests/core/manager/test_manager_keep.py"
       for f in ("save_decision_policy", "keep_time_interval", "keep_period", "best_fn", "best_mode",
                 "preservation_policy", "todelete_subdir", "max_to_keep")},
    **{("CheckpointManagerOptions", f): "tests/core/manager/test_manager_save_restore.py"
       for f in ("save_on_steps", "should_save_fn", "step_name_format", "save_root_metadata",
                 "save_interval_steps", "async_options")},
    **{("CheckpointManagerOptions", f): "tests/core/interop/test_read_orbax_written.py"
       for f in ("step_prefix", "step_format_fixed_length")},
    ("CheckpointManagerOptions", "keep_checkpoints_without_metrics"): "tests/core/manager/test_manager_keep.py",
    **{("CheckpointManagerOptions", f): "tests/reliability/crash/test_crash_manager.py"
       for f in ("cleanup_tmp_directories", "enable_async_checkpointing")},
    ("CheckpointManagerOptions", "create"): "tests/object_storage/test_faults.py",
    ("CheckpointManagerOptions", "read_only"): "tests/core/multiprocess/test_crash.py",
    ("CheckpointManagerOptions", "multiprocessing_options"): "tests/core/multiprocess/workloads.py",
    ("CheckpointManagerOptions", "enable_background_delete"): "tests/reliability/crash/child.py",
    ("CheckpointManagerOptions", "handle_sigterm"): "tests/core/manager/exit_child.py",
    ("CheckpointManagerOptions", "allow_concurrent_writers"): "tests/reliability/test_concurrency.py",
    **{("JaxRandomKeyRestore", f): "tests/core/interop/test_cross_library_items.py"
       for f in ("item", "restore_args")},
    ("JaxRandomKeySave", "item"): "tests/core/handlers/test_other_handlers.py",
    ("JaxRandomKeySave", "save_args"): HERE,
    ("JsonRestore", "item"): "tests/core/interop/test_read_orbax_written.py",
    **{(c, "item"): "tests/core/handlers/test_other_handlers.py"
       for c in ("JsonSave", "NumpyRandomKeyRestore", "NumpyRandomKeySave", "ProtoRestore",
                 "ProtoSave")},
    **{("MultiprocessingOptions", f): "tests/core/multiprocess/workloads.py"
       for f in ("primary_host", "active_processes", "barrier_timeout_s")},
    # No test yet observes the barrier name (it matters only with several processes).
    ("MultiprocessingOptions", "barrier_sync_key_prefix"): "GAP",
    **{("PyTreeRestore", f): "tests/core/handlers/test_pytree_handler.py" for f in ("item", "restore_args")},
    ("PyTreeRestore", "partial_restore"): "tests/core/multiprocess/workloads.py",
    **{("PyTreeRestore", f): TRANSFORMS
       for f in ("transforms", "transforms_default_to_original", "legacy_transform_fn")},
    **{("PyTreeSave", f): "tests/core/handlers/test_pytree_handler.py" for f in ("item", "save_args")},
    ("PyTreeSave", "custom_metadata"): "tests/core/checkpointers/test_checkpointer.py",
    **{("PyTreeSave", f): HERE for f in ("ocdbt_target_data_file_size", "enable_pinned_host_transfer")},
    ("RestoreArgs", "restore_type"): "tests/core/interop/interop_support.py",
    ("RestoreArgs", "dtype"): "tests/core/handlers/test_pytree_handler.py",
    **{("SaveArgs", f): "tests/core/handlers/test_pytree_handler.py" for f in ("dtype", "chunk_byte_size")},
    **{("SaveArgs", f): HERE for f in ("write_chunk_shape", "aggregate")},
    ("StandardRestore", "item"): "tests/object_storage/test_checkpointer.py",
    ("StandardRestore", "strict"): HERE,
    ("StandardRestore", "support_layout"): HERE,
    ("StandardSave", "item"): "tests/reliability/test_integrity.py",
    ("StandardSave", "save_args"): "tests/core/interop/libraries.py",
    ("StandardSave", "custom_metadata"): "tests/object_storage/test_checkpointer.py",
    **{("StorageOptions", f): STORAGE
       for f in ("object_store_max_retries", "fsync", "target_data_file_size",
                 "write_bytes_in_flight", "read_bytes_in_flight", "min_requests_in_flight")},
    # Orbax's manager fields accepted at their default only (refused otherwise, below).
    **{("CheckpointManagerOptions", f): HERE for f in manager_options._ORBAX_ONLY},
}


def _option_classes() -> dict[str, type]:
    found = {}
    for module in OPTION_MODULES:
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if dataclasses.is_dataclass(obj) and obj.__module__.startswith("jaxpoint.core"):
                # The emergency options reuse orbax's class names: keep them apart.
                prefix = "emergency." if obj.__module__.startswith("jaxpoint.core.emergency") else ""
                found[prefix + obj.__qualname__] = obj
    return found


def test_every_field_is_classified():
    fields = {(name, f.name) for name, cls in _option_classes().items() for f in dataclasses.fields(cls)}
    assert sorted(fields - FIELDS.keys()) == [], "unclassified fields: add them to FIELDS"
    assert sorted(FIELDS.keys() - fields) == [], "FIELDS lists fields that no longer exist"


def test_only_known_gaps_remain():
    assert [key for key, where in FIELDS.items() if where == "GAP"] == [
        ("MultiprocessingOptions", "barrier_sync_key_prefix")]


@pytest.mark.parametrize("key", sorted(k for k, v in FIELDS.items()
                                       if v not in ("GAP", HERE)))
def test_field_is_set_by_the_test_named(key):
    cls, field = key
    text = (TESTS.parent / FIELDS[key]).read_text()
    # `item` is the first positional argument: the class being called sets it.
    sets_it = f"{field}=" in text or (field == "item" and f"{cls}(" in text)
    assert sets_it and f"{cls}(" in text, f"{FIELDS[key]} never sets {cls}.{field}"


def _data_files(item: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in item.rglob("*") if p.is_file() and p.parent.name == "d"]


def test_ocdbt_target_data_file_size_rolls_data_files(tmp_path):
    tree = {f"a{i}": np.random.default_rng(i).random(16 * 1024) for i in range(8)}  # 128 KiB each
    ocp.PyTreeCheckpointer().save(tmp_path / "default", args=ocp.args.PyTreeSave(tree))
    ocp.PyTreeCheckpointer().save(tmp_path / "small", args=ocp.args.PyTreeSave(
        tree, ocdbt_target_data_file_size=64 * 1024))
    assert len(_data_files(tmp_path / "small")) > len(_data_files(tmp_path / "default"))
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "small")
    assert all(np.array_equal(restored[k], v) for k, v in tree.items())


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_ocdbt_target_data_file_size_must_be_positive(size):
    with pytest.raises(InvalidArgumentError, match=r"Expected PyTreeSave.ocdbt_target_data_file_size \(bytes\) to be an int >= 1 or None"):
        ocp.args.PyTreeSave({}, ocdbt_target_data_file_size=size)


def test_ocdbt_target_data_file_size_needs_ocdbt(tmp_path):
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False))
    with pytest.raises(InvalidArgumentError, match="use_ocdbt=True"):
        checkpointer.save(tmp_path / "c", args=ocp.args.PyTreeSave(
            {"a": np.zeros(4)}, ocdbt_target_data_file_size=1024))


@pytest.mark.parametrize("pinned", [True, False, None])
def test_enable_pinned_host_transfer_chooses_pinned_staging(pinned):
    staged = stage_tree({"a": jnp.arange(8.0)}, None, is_primary=True, copy=False, pinned=pinned)
    assert [is_pinned(data) for _, data in staged.writes[0].shards] == [bool(pinned)]


def test_enable_pinned_host_transfer_saves(tmp_path):
    tree = {"a": jnp.arange(8.0), "b": jax.random.normal(jax.random.key(0), (4, 4))}
    ocp.PyTreeCheckpointer().save(tmp_path / "c", args=ocp.args.PyTreeSave(
        tree, enable_pinned_host_transfer=True))
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c")
    assert all(np.array_equal(restored[k], v) for k, v in tree.items())


def test_write_chunk_shape_sets_the_chunks():
    args = ocp.SaveArgs(write_chunk_shape=(2, 3))
    staged = stage_tree({"a": np.zeros((8, 6))}, {"a": args}, is_primary=True, copy=False)
    assert staged.writes[0].chunk_shape == (2, 3)


def test_aggregate_is_rejected():
    with pytest.raises(InvalidArgumentError, match="aggregate=True.*not supported.*drop aggregate=True"):
        ocp.SaveArgs(aggregate=True)


def test_support_layout_is_rejected():
    with pytest.raises(InvalidArgumentError, match="support_layout=False.*got True.*not supported"):
        ocp.args.StandardRestore(support_layout=True)


def test_create_directories_asynchronously_is_rejected():
    with pytest.raises(InvalidArgumentError, match="create_directories_asynchronously.*not supported"):
        ocp.AsyncOptions(create_directories_asynchronously=True)


def test_standard_restore_strict_false_pads(tmp_path):
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "c", {"a": jnp.arange(4.0)})
    checkpointer.wait_until_finished()
    target = {"a": jax.ShapeDtypeStruct((6,), jnp.float32, sharding=jax.sharding.SingleDeviceSharding(
        jax.devices()[0]))}
    padded = ocp.StandardCheckpointer().restore(tmp_path / "c", args=ocp.args.StandardRestore(
        target, strict=False))
    assert padded["a"].shape == (6,) and np.array_equal(padded["a"][:4], np.arange(4.0))
    with pytest.raises(ocp.errors.CheckpointError, match="shape"):
        ocp.StandardCheckpointer().restore(tmp_path / "c", args=ocp.args.StandardRestore(target))


def test_array_and_random_key_save_args_cast_on_save(tmp_path):
    args = ocp.SaveArgs(dtype=np.float16)
    ocp.Checkpointer(ocp.ArrayCheckpointHandler()).save(
        tmp_path / "a", args=ocp.args.ArraySave(np.arange(4.0), save_args=args))
    restored = ocp.Checkpointer(ocp.ArrayCheckpointHandler()).restore(tmp_path / "a")
    assert np.asarray(restored).dtype == np.float16
    with pytest.raises(InvalidArgumentError, match="aggregate"):
        ocp.args.JaxRandomKeySave(jax.random.key(0), save_args=ocp.SaveArgs(aggregate=True))


@pytest.mark.parametrize("field", sorted(manager_options._ORBAX_ONLY))
def test_orbax_only_manager_fields_take_their_default_and_refuse_the_rest(field):
    default, _ = manager_options._ORBAX_ONLY[field]
    assert getattr(ocp.CheckpointManagerOptions(**{field: default}), field) is default
    other = {None: "x", False: True, True: False}[default]
    with pytest.raises(InvalidArgumentError,
                       match=rf"Expected CheckpointManagerOptions\.{field} to be {default!r} "
                             r"\(Orbax's default; jaxpoint has no such machinery\), got .*\. "
                             r"To fix, (drop it|pass todelete_subdir='todelete')"):
        ocp.CheckpointManagerOptions(**{field: other})
