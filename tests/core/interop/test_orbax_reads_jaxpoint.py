"""What the library under test writes, the real orbax-checkpoint 0.12.8 restores bit-exactly.

The writer is `ocp` (the library under test); every reader is `orbax_ocp`, the real
orbax package imported in the same process.
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
    sharding_matches,
)
from jax.sharding import NamedSharding, SingleDeviceSharding


def _orbax_restore_args(leaf: Any) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return orbax_ocp.ArrayRestoreArgs(
            sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype
        )
    if isinstance(leaf, np.ndarray):
        return orbax_ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype)
    return orbax_ocp.RestoreArgs(restore_type=type(leaf))


# ---------------------------------------------------------------- Standard and PyTree


def _save_standard_checkpointer(path: Path, tree: Any) -> None:
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
        checkpointer.wait_until_finished()


def _save_standard_args(path: Path, tree: Any) -> None:
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=ocp.args.StandardSave(tree))


def _save_standard_async(path: Path, tree: Any) -> None:
    with ocp.AsyncCheckpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=ocp.args.StandardSave(tree))
        checkpointer.wait_until_finished()


STANDARD_WRITERS: dict[str, Callable[[Path, Any], None]] = {
    "StandardCheckpointer": _save_standard_checkpointer,
    "Checkpointer+StandardSave": _save_standard_args,
    "AsyncCheckpointer+StandardSave": _save_standard_async,
}


@pytest.mark.parametrize("writer", sorted(STANDARD_WRITERS))
def test_orbax_restores_standard_save_without_target(writer: str, tmp_path: Path) -> None:
    tree = mixed_tree(seed=1)
    STANDARD_WRITERS[writer](tmp_path / "ckpt", tree)
    with orbax_ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt")
    assert_trees_bit_equal(restored, tree, where=writer)
    # Without a target orbax rebuilds each sharding from the `_sharding` file.
    assert_shardings_match(restored, tree, writer)


@pytest.mark.parametrize("writer", sorted(STANDARD_WRITERS))
def test_orbax_restores_standard_save_with_abstract_target(writer: str, tmp_path: Path) -> None:
    tree = mixed_tree(seed=2)
    STANDARD_WRITERS[writer](tmp_path / "ckpt", tree)
    target = abstract_of(tree)
    with orbax_ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", target)
    assert_trees_bit_equal(restored, tree, where=writer)
    assert_shardings_match(restored, target, writer)


def test_orbax_restores_standard_save_onto_other_sharding(tmp_path: Path) -> None:
    tree = mixed_tree(seed=3)
    _save_standard_args(tmp_path / "ckpt", tree)
    mesh = make_mesh((2, 4), ("a", "b"))
    other = {
        "sharded": NamedSharding(mesh, P("b", "a")),
        "sharded_rows_bf16": SingleDeviceSharding(jax.devices()[6]),
        "replicated": NamedSharding(mesh, P("a")),
    }
    target = abstract_of(tree)
    for key, sharding in other.items():
        target[key] = jax.ShapeDtypeStruct(tree[key].shape, tree[key].dtype, sharding=sharding)
    with orbax_ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", target)
    assert_trees_bit_equal(restored, tree, where="resharded")
    assert_shardings_match(restored, target, "resharded")


def _save_pytree(path: Path, tree: Any) -> None:
    with ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(path, args=ocp.args.PyTreeSave(tree))


def test_orbax_restores_pytree_save_without_target(tmp_path: Path) -> None:
    tree = mixed_tree(seed=4)
    _save_pytree(tmp_path / "ckpt", tree)
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt")
    assert_trees_bit_equal(restored, tree, where="PyTreeSave")
    assert_shardings_match(restored, tree, "PyTreeSave")


def test_orbax_restores_pytree_save_with_restore_args(tmp_path: Path) -> None:
    tree = mixed_tree(seed=5)
    _save_pytree(tmp_path / "ckpt", tree)
    target = abstract_of(tree)
    args = orbax_ocp.args.PyTreeRestore(
        item=target, restore_args=jax.tree.map(_orbax_restore_args, target)
    )
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=args)
    assert_trees_bit_equal(restored, tree, where="PyTreeRestore")
    assert_shardings_match(restored, target, "PyTreeRestore")


def test_orbax_reads_metadata_of_standard_save(tmp_path: Path) -> None:
    tree = mixed_tree(seed=21)
    _save_standard_args(tmp_path / "ckpt", tree)
    with orbax_ocp.StandardCheckpointer() as checkpointer:
        metadata = flatten(checkpointer.metadata(tmp_path / "ckpt").item_metadata)
    assert sorted(metadata) == sorted(flatten(tree))
    for key, leaf in flatten(tree).items():
        if isinstance(leaf, jax.Array | np.ndarray):
            found = (tuple(metadata[key].shape), jnp.dtype(metadata[key].dtype))
            assert found == (leaf.shape, leaf.dtype), key


def test_orbax_restores_pytree_non_array_leaves(tmp_path: Path) -> None:
    # Strings, bools, None and empty containers are PyTree leaves/nodes orbax keeps.
    tree = {
        "name": "héllo wörld",
        "flag": True,
        "count": -3,
        "none": None,
        "empty_dict": {},
        "empty_list": [],
        "x": jnp.arange(3, dtype=jnp.float32),
    }
    _save_pytree(tmp_path / "ckpt", tree)
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt")
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    assert_trees_bit_equal(restored, tree, where="non-array leaves")


def test_orbax_restores_zero_size_arrays(tmp_path: Path) -> None:
    # orbax 0.12.8 refuses to *save* zero-size arrays ("Cannot save arrays with zero
    # size") but reads them; jaxpoint saves them, so orbax must read what jaxpoint wrote.
    mesh = make_mesh((8,), ("x",))
    tree = {
        "empty_f32": jnp.zeros((0, 3), jnp.float32),
        "empty_bf16": jnp.zeros((5, 0), jnp.bfloat16),
        "empty_sharded": jax.device_put(
            jnp.zeros((0, 8), jnp.int32), NamedSharding(mesh, P(None, "x"))
        ),
        "empty_np": np.zeros((0,), np.uint32),
        "full": jnp.arange(4, dtype=jnp.int8),
    }
    _save_pytree(tmp_path / "ckpt", tree)
    target = abstract_of(tree)
    args = orbax_ocp.args.PyTreeRestore(
        item=target, restore_args=jax.tree.map(_orbax_restore_args, target)
    )
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=args)
    assert_trees_bit_equal(restored, tree, where="zero-size")


# ---------------------------------------------------------------- other handlers


def test_orbax_restores_composite_of_standard_and_json(tmp_path: Path) -> None:
    state = mixed_tree(seed=6)
    config = {"lr": 0.1, "layers": [4, 8], "name": "run-ä", "flags": {"bf16": True, "x": None}}
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(
            tmp_path / "ckpt",
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)
            ),
        )
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.is_dir()) == [
        "config",
        "state",
    ]
    with orbax_ocp.Checkpointer(orbax_ocp.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            tmp_path / "ckpt",
            args=orbax_ocp.args.Composite(
                state=orbax_ocp.args.StandardRestore(abstract_of(state)),
                config=orbax_ocp.args.JsonRestore(),
            ),
        )
    assert_trees_bit_equal(restored["state"], state, where="composite state")
    assert_shardings_match(restored["state"], state, "composite state")
    assert restored["config"] == config
    assert type(restored["config"]["layers"][0]) is int


def test_orbax_restores_json_item(tmp_path: Path) -> None:
    value = {"int": 3, "float": 0.1, "big": 2**53 + 1, "list": [1, "two", None, False], "u": "µ"}
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=ocp.args.JsonSave(value))
    with orbax_ocp.Checkpointer(orbax_ocp.JsonCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=orbax_ocp.args.JsonRestore())
    assert restored == value
    assert [type(v) for v in restored.values()] == [type(v) for v in value.values()]


def _sharded_array() -> jax.Array:
    mesh = make_mesh((4, 2), ("data", "model"))
    values = np.random.default_rng(7).standard_normal((16, 6)).astype(np.float32)
    return jax.device_put(values, NamedSharding(mesh, P("data", "model")))


ARRAYS: dict[str, Callable[[], jax.Array]] = {
    "single_device": lambda: jnp.asarray(
        np.random.default_rng(8).standard_normal((9, 9)), jnp.float32
    ),
    "sharded_8": _sharded_array,
    "bf16": lambda: jnp.asarray(np.random.default_rng(9).standard_normal((3, 7)), jnp.bfloat16),
}


@pytest.mark.parametrize("kind", sorted(ARRAYS))
def test_orbax_restores_array_item(kind: str, tmp_path: Path) -> None:
    array = ARRAYS[kind]()
    with ocp.Checkpointer(ocp.ArrayCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=ocp.args.ArraySave(array))
    restore_args = orbax_ocp.ArrayRestoreArgs(
        sharding=array.sharding, global_shape=array.shape, dtype=array.dtype
    )
    with orbax_ocp.Checkpointer(orbax_ocp.ArrayCheckpointHandler()) as checkpointer:
        with_args = checkpointer.restore(
            tmp_path / "ckpt", args=orbax_ocp.args.ArrayRestore(restore_args=restore_args)
        )
        without_args = checkpointer.restore(tmp_path / "ckpt")
    assert_trees_bit_equal(with_args, array, where=f"{kind} with args")
    assert sharding_matches(with_args.sharding, array.sharding)
    assert_trees_bit_equal(without_args, array, where=f"{kind} without args")


JAX_KEYS: dict[str, Callable[[], jax.Array]] = {
    "typed_threefry": lambda: jax.random.key(42),
    "raw_uint32": lambda: jax.random.PRNGKey(1234),
    "typed_split": lambda: jax.random.split(jax.random.key(5))[1],
}


@pytest.mark.parametrize("kind", sorted(JAX_KEYS))
def test_orbax_restores_jax_random_key(kind: str, tmp_path: Path) -> None:
    key = JAX_KEYS[kind]()
    with ocp.Checkpointer(ocp.JaxRandomKeyCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=ocp.args.JaxRandomKeySave(key))
    with orbax_ocp.Checkpointer(orbax_ocp.JaxRandomKeyCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            tmp_path / "ckpt", args=orbax_ocp.args.JaxRandomKeyRestore()
        )
    is_typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    assert jnp.issubdtype(restored.dtype, jax.dtypes.prng_key) == is_typed
    if is_typed:
        assert str(jax.random.key_impl(restored)) == str(jax.random.key_impl(key))
    assert digest(restored) == digest(key)
    # The restored key draws the same numbers.
    assert digest(jax.random.uniform(restored, (4,))) == digest(jax.random.uniform(key, (4,)))


def test_orbax_restores_numpy_random_state(tmp_path: Path) -> None:
    generator = np.random.RandomState(3)
    generator.standard_normal(5)  # move off the seed state, incl. a cached gaussian
    state = generator.get_state()
    with ocp.Checkpointer(ocp.NumpyRandomKeyCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=ocp.args.NumpyRandomKeySave(state))
    with orbax_ocp.Checkpointer(orbax_ocp.NumpyRandomKeyCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            tmp_path / "ckpt", args=orbax_ocp.args.NumpyRandomKeyRestore()
        )
    assert len(restored) == len(state) == 5
    assert restored[0] == state[0]
    assert digest(restored[1]) == digest(state[1])
    assert [int(restored[2]), int(restored[3]), float(restored[4])] == list(state[2:])
    resumed = np.random.RandomState()
    resumed.set_state(restored)
    assert digest(resumed.standard_normal(6)) == digest(generator.standard_normal(6))


# ---------------------------------------------------------------- managers

LOSSES = {10: 0.9, 20: 0.3, 30: 0.5, 40: 0.4, 50: 0.7}
KEPT_STEPS = [20, 40]  # max_to_keep=2 with best_fn keeps the two lowest losses


def _state(step: int) -> dict[str, Any]:
    rng = np.random.default_rng(step)
    mesh = make_mesh((4, 2), ("data", "model"))
    return {
        "params": {
            "w": jax.device_put(
                jnp.asarray(rng.standard_normal((8, 4)), jnp.float32),
                NamedSharding(mesh, P("data", "model")),
            ),
            "b": jnp.asarray(rng.standard_normal(4), jnp.bfloat16),
        },
        "step": jnp.asarray(step, jnp.int32),
    }


def _manager_options(module: Any) -> Any:
    return module.CheckpointManagerOptions(
        step_prefix="ckpt",
        step_format_fixed_length=6,
        best_fn=lambda metrics: metrics["loss"],
        best_mode="min",
        max_to_keep=2,
    )


def test_orbax_manager_reads_manager_directory(tmp_path: Path) -> None:
    root = tmp_path / "run"
    with ocp.CheckpointManager(
        root,
        options=_manager_options(ocp),
        item_names=("state", "config"),
        metadata={"run": "interop", "seed": 3},
    ) as manager:
        for step, loss in LOSSES.items():
            saved = manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(_state(step)),
                    config=ocp.args.JsonSave({"step": step, "lr": 0.1}),
                ),
                metrics={"loss": loss},
                custom_metadata={"note": f"step {step}"},
            )
            assert saved
        manager.wait_until_finished()
        assert manager.all_steps() == KEPT_STEPS

    step_dirs = sorted(p.name for p in root.iterdir() if p.name.startswith("ckpt"))
    assert step_dirs == [f"ckpt_{step:06d}" for step in KEPT_STEPS]

    with orbax_ocp.CheckpointManager(
        root, options=_manager_options(orbax_ocp), item_names=("state", "config")
    ) as manager:
        assert list(manager.all_steps()) == KEPT_STEPS
        assert manager.latest_step() == max(KEPT_STEPS)
        assert manager.best_step() == min(KEPT_STEPS, key=LOSSES.__getitem__)
        assert dict(manager.metadata().custom_metadata) == {"run": "interop", "seed": 3}
        for step in KEPT_STEPS:
            expected = _state(step)
            restored = manager.restore(
                step,
                args=orbax_ocp.args.Composite(
                    state=orbax_ocp.args.StandardRestore(abstract_of(expected)),
                    config=orbax_ocp.args.JsonRestore(),
                ),
            )
            assert_trees_bit_equal(restored["state"], expected, where=f"step {step}")
            assert_shardings_match(restored["state"], expected, f"step {step}")
            assert restored["config"] == {"step": step, "lr": 0.1}
            assert manager.metrics(step) == {"loss": LOSSES[step]}
            assert dict(manager.metadata(step).custom_metadata) == {"note": f"step {step}"}


def test_orbax_manager_reads_default_layout(tmp_path: Path) -> None:
    # No options: step folders named by the bare step, one unnamed item ("default").
    root = tmp_path / "run"
    states = {step: _state(step) for step in (1, 2, 3)}
    with ocp.CheckpointManager(root) as manager:
        for step, state in states.items():
            manager.save(step, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
    assert sorted(p.name for p in root.iterdir() if p.name.isdigit()) == ["1", "2", "3"]
    assert (root / "3" / "default").is_dir()
    with orbax_ocp.CheckpointManager(root) as manager:
        assert list(manager.all_steps()) == [1, 2, 3]
        assert manager.latest_step() == 3
        for step, state in states.items():
            restored = manager.restore(
                step, args=orbax_ocp.args.StandardRestore(abstract_of(state))
            )
            assert_trees_bit_equal(restored, state, where=f"step {step}")
