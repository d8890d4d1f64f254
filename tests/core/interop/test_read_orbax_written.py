"""Checkpoints written by orbax-checkpoint 0.12.8 (tests/data/orbax-0.12.8) restore
bit-exactly through the library under test, with the API each case's expected.json names.

Every case is copied to tmp_path first: the data folders are read-only and must never
change, and a checkpointer or manager may write (tmp cleanup, metadata) when it opens one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.interop.interop_support import (
    DATA_DIR,
    OrbaxCase,
    P,
    abstract_from_metadata_file,
    assert_leaves_match_expected,
    assert_shards_consistent,
    digest,
    flatten,
    load_case,
    make_mesh,
    ocp,
    read_json,
    restore_args_for,
    sharding_matches,
)
from jax.sharding import NamedSharding, SingleDeviceSharding

KNOWN_CASES = {
    "array_handler": "ArrayCheckpointHandler",
    "manager_composite_best": "CheckpointManager",
    "pytree_no_ocdbt": "PyTreeCheckpointer.restore",
    "pytree_zarr3_uncompressed": "PyTreeCheckpointer.restore",
    "sharded_named_mesh": "StandardCheckpointer.restore",
    "standard_mixed_dtypes": "StandardCheckpointer.restore",
}
CASES = sorted(path.parent.name for path in DATA_DIR.glob("*/expected.json"))
ITEM_CASES = [name for name in CASES if load_case(name).api != "CheckpointManager"]
TREE_CASES = [name for name in CASES if load_case(name).expected["kind"] in ("standard", "pytree")]
MANAGER_CASES = [name for name in CASES if load_case(name).api == "CheckpointManager"]


def test_data_holds_every_known_case() -> None:
    # A fresh clone has no ../shared: the cases must live in tests/data, and a case added
    # there with an API this module cannot drive must fail here rather than go untested.
    assert {name: load_case(name).api for name in CASES} == KNOWN_CASES


# ---------------------------------------------------------------- restoring one item


def restore_item(case: OrbaxCase, path: Path, target: Any = None) -> Any:
    """Restores a non-manager case the way its expected.json says orbax wrote it.

    Returns a tree whose leaf paths match expected.json's `leaves`.
    """
    if case.api == "StandardCheckpointer.restore":
        with ocp.StandardCheckpointer() as checkpointer:
            return (
                checkpointer.restore(path) if target is None else checkpointer.restore(path, target)
            )
    if case.api == "PyTreeCheckpointer.restore":
        with ocp.PyTreeCheckpointer() as checkpointer:
            if target is None:
                return checkpointer.restore(path)
            restore_args = jax.tree.map(lambda leaf: restore_args_for(ocp, leaf), target)
            return checkpointer.restore(
                path, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args)
            )
    if case.api == "ArrayCheckpointHandler":
        with ocp.Checkpointer(ocp.ArrayCheckpointHandler()) as checkpointer:
            if target is None:
                return {"array": checkpointer.restore(path)}
            args = ocp.args.ArrayRestore(restore_args=restore_args_for(ocp, target["array"]))
            return {"array": checkpointer.restore(path, args=args)}
    raise AssertionError(f"{case.name}: no restore rule for api {case.api!r}")


def _single_device(name: str, shape: tuple[int, ...]) -> jax.sharding.Sharding:
    # Not device 0, so a reader that ignores the target and uses the default device fails.
    return SingleDeviceSharding(jax.devices()[1])


def _over_eight_devices(name: str, shape: tuple[int, ...]) -> jax.sharding.Sharding:
    mesh = make_mesh((8,), ("x",))
    if shape and shape[0] % 8 == 0:
        return NamedSharding(mesh, P("x"))
    return NamedSharding(mesh, P())


LAYOUTS = {"single_device": _single_device, "over_8_devices": _over_eight_devices}


def abstract_target(case: OrbaxCase, path: Path, layout: str) -> Any:
    sharding_for = LAYOUTS[layout]
    leaves = case.expected["leaves"]
    if case.api == "ArrayCheckpointHandler":
        spec = leaves["array"]
        shape = tuple(spec["shape"])
        return {
            "array": jax.ShapeDtypeStruct(
                shape, jnp.dtype(spec["dtype"]), sharding=sharding_for("array", shape)
            )
        }
    return abstract_from_metadata_file(path, leaves, sharding_for)


def _assert_placed_as_target(restored: Any, target: Any, where: str) -> None:
    targets = flatten(target)
    for key, leaf in flatten(restored).items():
        wanted = targets[key]
        if isinstance(wanted, jax.ShapeDtypeStruct):
            assert isinstance(leaf, jax.Array), f"{where}: {key} is {type(leaf).__name__}"
            assert sharding_matches(leaf.sharding, wanted.sharding), (
                f"{where}: {key} restored with {leaf.sharding}, target was {wanted.sharding}"
            )
        else:
            assert isinstance(leaf, np.ndarray), (
                f"{where}: {key} restored as {type(leaf).__name__}, target was a numpy array"
            )


@pytest.mark.parametrize("name", ITEM_CASES)
def test_restore_without_target(name: str, tmp_path: Path) -> None:
    case = load_case(name)
    path = case.copy_to(tmp_path)
    restored = restore_item(case, path)
    assert_leaves_match_expected(restored, case.expected["leaves"], where=name)


def test_restore_without_target_keeps_leaf_types(tmp_path: Path) -> None:
    # _METADATA records np.ndarray vs jax.Array; each must come back as what was saved.
    case = load_case("standard_mixed_dtypes")
    path = case.copy_to(tmp_path)
    restored = flatten(restore_item(case, path))
    assert isinstance(restored["np_arr"], np.ndarray)
    assert restored["np_arr"].dtype == np.float64
    jax_leaves = [key for key in restored if key != "np_arr"]
    assert all(isinstance(restored[key], jax.Array) for key in jax_leaves), {
        key: type(restored[key]).__name__ for key in jax_leaves
    }
    assert isinstance(restored["nested.list.0"], jax.Array)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", ITEM_CASES)
def test_restore_with_abstract_target(name: str, layout: str, tmp_path: Path) -> None:
    case = load_case(name)
    path = case.copy_to(tmp_path)
    target = abstract_target(case, path, layout)
    restored = restore_item(case, path, target)
    where = f"{name} onto {layout}"
    assert_leaves_match_expected(restored, case.expected["leaves"], where=where)
    _assert_placed_as_target(restored, target, where)


def test_sharded_restore_without_target_uses_saved_sharding(tmp_path: Path) -> None:
    case = load_case("sharded_named_mesh")
    mesh_spec = case.expected["mesh"]
    mesh = make_mesh(tuple(mesh_spec["shape"]), tuple(mesh_spec["axes"]))
    saved = {"w": P("data", "model"), "emb": P(None, "model"), "replicated": P()}
    restored = restore_item(case, case.copy_to(tmp_path))
    for key, spec in saved.items():
        assert sharding_matches(restored[key].sharding, NamedSharding(mesh, spec)), (
            f"{key}: restored with {restored[key].sharding}, saved with {spec} on {mesh}"
        )


def _mesh_2x4() -> dict[str, jax.sharding.Sharding]:
    mesh = make_mesh((2, 4), ("data", "model"))
    return {
        "w": NamedSharding(mesh, P("data", "model")),
        "emb": NamedSharding(mesh, P("data", None)),
        "replicated": NamedSharding(mesh, P("model")),
    }


def _mesh_8x1() -> dict[str, jax.sharding.Sharding]:
    mesh = make_mesh((8, 1), ("data", "model"))
    return {
        "w": NamedSharding(mesh, P("data", "model")),
        "emb": NamedSharding(mesh, P("data", None)),
        "replicated": NamedSharding(mesh, P("data")),
    }


def _one_device() -> dict[str, jax.sharding.Sharding]:
    device = SingleDeviceSharding(jax.devices()[5])
    return dict.fromkeys(("w", "emb", "replicated"), device)


def _replicated_everywhere() -> dict[str, jax.sharding.Sharding]:
    replicated = NamedSharding(make_mesh((2, 4), ("data", "model")), P())
    return dict.fromkeys(("w", "emb", "replicated"), replicated)


RESHARD_TARGETS = {
    "mesh_2x4": _mesh_2x4,
    "mesh_8x1": _mesh_8x1,
    "single_device": _one_device,
    "replicated_on_8": _replicated_everywhere,
}


@pytest.mark.parametrize("target_name", sorted(RESHARD_TARGETS))
def test_sharded_case_restores_onto_other_sharding(target_name: str, tmp_path: Path) -> None:
    case = load_case("sharded_named_mesh")
    shardings = RESHARD_TARGETS[target_name]()
    leaves = case.expected["leaves"]
    target = {
        key: jax.ShapeDtypeStruct(
            tuple(leaves[key]["shape"]), jnp.dtype(leaves[key]["dtype"]), sharding=sharding
        )
        for key, sharding in shardings.items()
    }
    restored = restore_item(case, case.copy_to(tmp_path), target)
    assert_leaves_match_expected(restored, leaves, where=f"sharded onto {target_name}")
    _assert_placed_as_target(restored, target, f"sharded onto {target_name}")


@pytest.mark.parametrize("name", TREE_CASES)
def test_metadata_matches_expected(name: str, tmp_path: Path) -> None:
    case = load_case(name)
    path = case.copy_to(tmp_path)
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = checkpointer.metadata(path)
    found = {
        key: {"dtype": str(jnp.dtype(leaf.dtype)), "shape": list(leaf.shape)}
        for key, leaf in flatten(metadata.item_metadata).items()
    }
    wanted = {
        key: {"dtype": spec["dtype"], "shape": spec["shape"]}
        for key, spec in case.expected["leaves"].items()
    }
    assert found == wanted


# ---------------------------------------------------------------- the manager case


def open_manager(case: OrbaxCase, path: Path, **kwargs: Any) -> Any:
    restore = case.expected["restore"]
    metric = restore["best_metric"]
    options = ocp.CheckpointManagerOptions(
        step_prefix=restore["step_prefix"],
        step_format_fixed_length=restore["step_format_fixed_length"],
        best_fn=lambda metrics: metrics[metric],
        best_mode=restore["best_mode"],
    )
    if "item_handlers" not in kwargs:
        kwargs["item_names"] = tuple(restore["item_names"])
    return ocp.CheckpointManager(path, options=options, **kwargs)


def _composite_restore(state_target: Any = None) -> Any:
    return ocp.args.Composite(
        state=ocp.args.StandardRestore(state_target), config=ocp.args.JsonRestore()
    )


@pytest.mark.parametrize("name", MANAGER_CASES)
def test_manager_lists_steps(name: str, tmp_path: Path) -> None:
    case = load_case(name)
    with open_manager(case, case.copy_to(tmp_path)) as manager:
        all_steps, latest, best = manager.all_steps(), manager.latest_step(), manager.best_step()
    assert list(all_steps) == case.expected["all_steps"]
    assert latest == case.expected["latest_step"]
    assert best == case.expected["best_step"]
    assert all(type(step) is int for step in [*all_steps, latest, best])


@pytest.mark.parametrize("name", MANAGER_CASES)
def test_manager_restores_every_step(name: str, tmp_path: Path) -> None:
    case = load_case(name)
    with open_manager(case, case.copy_to(tmp_path)) as manager:
        restored = {
            int(step): manager.restore(int(step), args=_composite_restore())
            for step in case.expected["state_by_step"]
        }
    for step, leaves in case.expected["state_by_step"].items():
        assert_leaves_match_expected(
            restored[int(step)]["state"], leaves, prefix="state.", where=f"step {step}"
        )
    best = restored[case.expected["best_step"]]
    for item, value in case.expected["json_items"].items():
        assert best[item] == value


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", MANAGER_CASES)
def test_manager_restores_onto_abstract_state(name: str, layout: str, tmp_path: Path) -> None:
    case = load_case(name)
    path = case.copy_to(tmp_path)
    restore = case.expected["restore"]
    step = case.expected["best_step"]
    step_dir = path / f"{restore['step_prefix']}_{step:0{restore['step_format_fixed_length']}d}"
    leaves = case.expected["state_by_step"][str(step)]
    target = abstract_from_metadata_file(
        step_dir / "state", leaves, LAYOUTS[layout], prefix="state."
    )
    with open_manager(case, path) as manager:
        restored = manager.restore(step, args=_composite_restore(target))
    assert_leaves_match_expected(restored["state"], leaves, prefix="state.", where=layout)
    _assert_placed_as_target(restored["state"], target, layout)


@pytest.mark.parametrize("name", MANAGER_CASES)
def test_manager_restores_latest_with_item_handlers(name: str, tmp_path: Path) -> None:
    case = load_case(name)
    handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}
    with open_manager(case, case.copy_to(tmp_path), item_handlers=handlers) as manager:
        restored = manager.restore(None)  # None: the latest step
    latest = str(case.expected["latest_step"])
    leaves = case.expected["state_by_step"][latest]
    assert_leaves_match_expected(restored["state"], leaves, prefix="state.", where="latest")
    assert restored["config"]["step"] == case.expected["latest_step"]


@pytest.mark.parametrize("name", MANAGER_CASES)
def test_manager_metrics_and_metadata(name: str, tmp_path: Path) -> None:
    case = load_case(name)
    path = case.copy_to(tmp_path)
    restore = case.expected["restore"]
    metric = restore["best_metric"]
    with open_manager(case, path) as manager:
        metrics = {step: manager.metrics(step) for step in case.expected["all_steps"]}
        root_custom = manager.metadata().custom_metadata
        step_custom = {
            step: manager.metadata(step).custom_metadata for step in case.expected["all_steps"]
        }
    for step, found in metrics.items():
        step_dir = path / f"{restore['step_prefix']}_{step:0{restore['step_format_fixed_length']}d}"
        assert found == read_json(step_dir / "metrics" / "metrics"), f"step {step}"
    choose = min if restore["best_mode"] == "min" else max
    assert choose(metrics, key=lambda step: metrics[step][metric]) == case.expected["best_step"]
    # expected.json may omit these two; this case was written without either, and its
    # _CHECKPOINT_METADATA files hold "custom_metadata": {} (no metadata/_ROOT_METADATA).
    assert dict(root_custom) == case.expected.get("root_metadata", {})
    for step, custom in step_custom.items():
        assert dict(custom) == case.expected.get("custom_metadata", {}), f"step {step}"


def test_digest_matches_expected_convention() -> None:
    # Guards the helper the whole module relies on: bfloat16 is hashed as its uint16 view.
    value = np.asarray([1.0, -2.0], dtype=jnp.bfloat16)
    by_hand = hashlib.sha256(value.view(np.uint16).tobytes()).hexdigest()
    assert digest(value) == {"dtype": "bfloat16", "shape": [2], "sha256": by_hand}
    assert_shards_consistent(jax.device_put(jnp.arange(8.0), jax.devices()[2]))
