"""Fresh checkpoints written by the real orbax-checkpoint 0.12.8 into tmp_path restore
bit-exactly through the library under test.

Unlike test_read_orbax_written.py this needs no stored data: each test writes its own
fixture with orbax (zarr2 + zstd by default, zarr3, the legacy layout without OCDBT, small
chunks, async, composite/JSON/array/random-key items and a manager directory), so the
suite keeps covering orbax's writer wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.interop.interop_support import (
    P,
    abstract_of,
    assert_shardings_match,
    assert_trees_bit_equal,
    digest,
    flatten,
    make_mesh,
    mixed_tree,
    ocp,
    orbax_ocp,
    read_json,
    sharding_matches,
)
from jax.sharding import NamedSharding, SingleDeviceSharding

# ---------------------------------------------------------------- orbax writers


def _pytree_writer(**handler_options: Any) -> Callable[[Path, Any], None]:
    def write(path: Path, tree: Any) -> None:
        handler = orbax_ocp.PyTreeCheckpointHandler(**handler_options)
        with orbax_ocp.Checkpointer(handler) as checkpointer:
            checkpointer.save(path, args=orbax_ocp.args.PyTreeSave(tree))

    return write


def _write_standard(path: Path, tree: Any) -> None:
    with orbax_ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
        checkpointer.wait_until_finished()


def _write_async(path: Path, tree: Any) -> None:
    with orbax_ocp.AsyncCheckpointer(orbax_ocp.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=orbax_ocp.args.StandardSave(tree))
        checkpointer.wait_until_finished()


def _write_small_chunks(path: Path, tree: Any) -> None:
    # 64-byte chunks: every array of more than 16 floats spans several chunks.
    save_args = jax.tree.map(lambda _: orbax_ocp.SaveArgs(chunk_byte_size=64), tree)
    handler = orbax_ocp.PyTreeCheckpointHandler(use_zarr3=True)
    with orbax_ocp.Checkpointer(handler) as checkpointer:
        checkpointer.save(path, args=orbax_ocp.args.PyTreeSave(tree, save_args=save_args))


# name -> (writer, use_ocdbt, use_zarr3) as the _METADATA file must record them
WRITERS: dict[str, tuple[Callable[[Path, Any], None], bool, bool]] = {
    "standard_zarr2_zstd_ocdbt": (_write_standard, True, False),
    "async_standard": (_write_async, True, False),
    "pytree_zarr3_ocdbt": (_pytree_writer(use_zarr3=True), True, True),
    "pytree_zarr2_no_ocdbt": (_pytree_writer(use_ocdbt=False), False, False),
    "pytree_zarr3_no_ocdbt": (_pytree_writer(use_ocdbt=False, use_zarr3=True), False, True),
    "pytree_zarr3_small_chunks": (_write_small_chunks, True, True),
}


def write_fixture(name: str, path: Path, tree: Any) -> None:
    writer, use_ocdbt, use_zarr3 = WRITERS[name]
    writer(path, tree)
    # The fixture must really be the variant it is named after.
    metadata = read_json(path / "_METADATA")
    assert (metadata["use_ocdbt"], metadata["use_zarr3"]) == (use_ocdbt, use_zarr3)
    assert (path / "manifest.ocdbt").is_file() == use_ocdbt
    if not use_ocdbt:
        array_meta = "zarr.json" if use_zarr3 else ".zarray"
        assert (path / "f32" / array_meta).is_file()


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_restore_without_target(writer: str, tmp_path: Path) -> None:
    tree = mixed_tree(seed=11)
    write_fixture(writer, tmp_path / "ckpt", tree)
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt")
    assert_trees_bit_equal(restored, tree, where=writer)
    assert_shardings_match(restored, tree, writer)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_restore_onto_other_sharding(writer: str, tmp_path: Path) -> None:
    tree = mixed_tree(seed=12)
    write_fixture(writer, tmp_path / "ckpt", tree)
    mesh = make_mesh((8, 1), ("rows", "cols"))
    target = abstract_of(tree)
    retarget = {
        "sharded": NamedSharding(mesh, P("rows", None)),
        "sharded_rows_bf16": NamedSharding(mesh, P()),
        "replicated": SingleDeviceSharding(jax.devices()[7]),
        "f32": NamedSharding(mesh, P(None, "cols")),
    }
    for key, sharding in retarget.items():
        target[key] = jax.ShapeDtypeStruct(tree[key].shape, tree[key].dtype, sharding=sharding)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", target)
    assert_trees_bit_equal(restored, tree, where=writer)
    assert_shardings_match(restored, target, writer)


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_metadata_reports_shapes_and_dtypes(writer: str, tmp_path: Path) -> None:
    tree = mixed_tree(seed=13)
    write_fixture(writer, tmp_path / "ckpt", tree)
    with ocp.StandardCheckpointer() as checkpointer:
        metadata = flatten(checkpointer.metadata(tmp_path / "ckpt").item_metadata)
    assert sorted(metadata) == sorted(flatten(tree))
    for key, leaf in flatten(tree).items():
        if isinstance(leaf, jax.Array | np.ndarray):
            found = (tuple(metadata[key].shape), jnp.dtype(metadata[key].dtype))
            assert found == (leaf.shape, leaf.dtype), key


def test_restore_pytree_non_array_leaves(tmp_path: Path) -> None:
    tree = {
        "name": "héllo wörld",
        "flag": False,
        "count": 12,
        "none": None,
        "empty_dict": {},
        "empty_list": [],
        "x": jnp.arange(3, dtype=jnp.int32),
    }
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=orbax_ocp.args.PyTreeSave(tree))
    with ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt")
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    assert_trees_bit_equal(restored, tree, where="non-array leaves")


# ---------------------------------------------------------------- other handlers


def test_restore_composite_of_standard_and_json(tmp_path: Path) -> None:
    state = mixed_tree(seed=14)
    config = {"lr": 3e-4, "schedule": ["warmup", 100], "nested": {"on": True, "none": None}}
    with orbax_ocp.Checkpointer(orbax_ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(
            tmp_path / "ckpt",
            args=orbax_ocp.args.Composite(
                state=orbax_ocp.args.StandardSave(state), config=orbax_ocp.args.JsonSave(config)
            ),
        )
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            tmp_path / "ckpt",
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_of(state)), config=ocp.args.JsonRestore()
            ),
        )
    assert_trees_bit_equal(restored["state"], state, where="composite")
    assert_shardings_match(restored["state"], state, "composite")
    assert restored["config"] == config


def test_restore_json_item(tmp_path: Path) -> None:
    value = {"a": 1, "b": [1.5, "x", None, True], "c": {"d": -(2**40)}}
    with orbax_ocp.Checkpointer(orbax_ocp.JsonCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=orbax_ocp.args.JsonSave(value))
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=ocp.args.JsonRestore())
    assert restored == value
    assert type(restored["b"][0]) is float and type(restored["c"]["d"]) is int


@pytest.mark.parametrize("sharded", [False, True], ids=["single_device", "sharded_8"])
def test_restore_array_item(sharded: bool, tmp_path: Path) -> None:
    values = np.random.default_rng(15).standard_normal((16, 6)).astype(np.float32)
    if sharded:
        sharding: jax.sharding.Sharding = NamedSharding(
            make_mesh((4, 2), ("data", "model")), P("data", "model")
        )
    else:
        sharding = SingleDeviceSharding(jax.devices()[0])
    array = jax.device_put(values, sharding)
    with orbax_ocp.Checkpointer(orbax_ocp.ArrayCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=orbax_ocp.args.ArraySave(array))
    other = NamedSharding(make_mesh((2, 4), ("a", "b")), P("b", None))
    restore_args = ocp.ArrayRestoreArgs(sharding=other, global_shape=array.shape, dtype=array.dtype)
    with ocp.Checkpointer(ocp.ArrayCheckpointHandler()) as checkpointer:
        with_args = checkpointer.restore(
            tmp_path / "ckpt", args=ocp.args.ArrayRestore(restore_args=restore_args)
        )
        without_args = checkpointer.restore(tmp_path / "ckpt")
    assert_trees_bit_equal(with_args, array, where="with args")
    assert sharding_matches(with_args.sharding, other)
    assert_trees_bit_equal(without_args, array, where="without args")


@pytest.mark.parametrize("typed", [True, False], ids=["typed_key", "raw_uint32_key"])
def test_restore_jax_random_key(typed: bool, tmp_path: Path) -> None:
    key = jax.random.key(99) if typed else jax.random.PRNGKey(99)
    with orbax_ocp.Checkpointer(orbax_ocp.JaxRandomKeyCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=orbax_ocp.args.JaxRandomKeySave(key))
    with ocp.Checkpointer(ocp.JaxRandomKeyCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=ocp.args.JaxRandomKeyRestore())
    assert jnp.issubdtype(restored.dtype, jax.dtypes.prng_key) == typed
    assert digest(restored) == digest(key)
    assert digest(jax.random.normal(restored, (3,))) == digest(jax.random.normal(key, (3,)))


def test_restore_numpy_random_state(tmp_path: Path) -> None:
    generator = np.random.RandomState(17)
    generator.random_sample(3)
    state = generator.get_state()
    with orbax_ocp.Checkpointer(orbax_ocp.NumpyRandomKeyCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=orbax_ocp.args.NumpyRandomKeySave(state))
    with ocp.Checkpointer(ocp.NumpyRandomKeyCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=ocp.args.NumpyRandomKeyRestore())
    assert restored[0] == state[0]
    assert digest(restored[1]) == digest(state[1])
    assert [int(restored[2]), int(restored[3]), float(restored[4])] == list(state[2:])


# ---------------------------------------------------------------- a manager directory

LOSSES = {100: 2.0, 200: 1.1, 300: 1.4, 400: 0.8, 500: 1.6}


def _state(step: int) -> dict[str, Any]:
    rng = np.random.default_rng(step)
    mesh = make_mesh((4, 2), ("data", "model"))
    return {
        "params": {
            "kernel": jax.device_put(
                jnp.asarray(rng.standard_normal((8, 6)), jnp.float32),
                NamedSharding(mesh, P("data", "model")),
            ),
            "scale": jnp.asarray(rng.standard_normal(3), jnp.bfloat16),
        },
        "opt": [jnp.asarray(rng.integers(0, 100, 4), jnp.int32), np.float64(step / 7)],
        "step": step,
    }


def _options(module: Any) -> Any:
    return module.CheckpointManagerOptions(
        step_prefix="run",
        step_format_fixed_length=8,
        best_fn=lambda metrics: metrics["loss"],
        best_mode="min",
        max_to_keep=3,
    )


def _write_manager(root: Path) -> None:
    with orbax_ocp.CheckpointManager(
        root,
        options=_options(orbax_ocp),
        item_names=("state", "config"),
        metadata={"experiment": "interop", "version": 2},
    ) as manager:
        for step, loss in LOSSES.items():
            manager.save(
                step,
                args=orbax_ocp.args.Composite(
                    state=orbax_ocp.args.StandardSave(_state(step)),
                    config=orbax_ocp.args.JsonSave({"step": step}),
                ),
                metrics={"loss": loss},
                custom_metadata={"tag": f"s{step}"},
            )
        manager.wait_until_finished()


def test_manager_directory_lists_and_restores(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _write_manager(root)
    kept = sorted(sorted(LOSSES, key=LOSSES.__getitem__)[:3])
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("run_")) == [
        f"run_{step:08d}" for step in kept
    ]
    with ocp.CheckpointManager(
        root, options=_options(ocp), item_names=("state", "config")
    ) as manager:
        assert list(manager.all_steps()) == kept
        assert manager.latest_step() == max(kept)
        assert manager.best_step() == min(LOSSES, key=LOSSES.__getitem__)
        assert dict(manager.metadata().custom_metadata) == {"experiment": "interop", "version": 2}
        for step in kept:
            expected = _state(step)
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_of(expected)),
                    config=ocp.args.JsonRestore(),
                ),
            )
            assert_trees_bit_equal(restored["state"], expected, where=f"step {step}")
            assert_shardings_match(restored["state"], expected, f"step {step}")
            assert restored["config"] == {"step": step}
            assert manager.metrics(step) == {"loss": LOSSES[step]}
            assert dict(manager.metadata(step).custom_metadata) == {"tag": f"s{step}"}


def test_manager_restores_latest_from_recorded_handlers(tmp_path: Path) -> None:
    root = tmp_path / "run"
    _write_manager(root)
    handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}
    with ocp.CheckpointManager(root, options=_options(ocp), item_handlers=handlers) as manager:
        latest = manager.latest_step()
        restored = manager.restore(None)  # None: the latest step
    assert_trees_bit_equal(restored["state"], _state(latest), where="latest")
    assert restored["config"] == {"step": latest}
