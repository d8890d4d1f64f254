"""Other items (composite, JSON, array, random keys) and a manager directory, each
pattern written once and run in both directions: one library writes into tmp_path, the
other restores bit-exactly.
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
    make_mesh,
    mixed_tree,
    ocp,
    orbax_ocp,
    sharding_matches,
)
from core.interop.libraries import (
    BOTH_WAYS,
    LIBRARIES,
    reader_of,
)
from jax.sharding import NamedSharding

# ---------------------------------------------------------------- other handlers


@pytest.mark.parametrize("writer", BOTH_WAYS)
def test_restore_composite_of_standard_and_json(writer: str, tmp_path: Path) -> None:
    state = mixed_tree(seed=14)
    config = {"lr": 3e-4, "layers": [4, 8], "name": "run-ä", "nested": {"on": True, "none": None}}
    lib, reader = LIBRARIES[writer], reader_of(writer)
    with lib.Checkpointer(lib.CompositeCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=lib.args.Composite(
            state=lib.args.StandardSave(state), config=lib.args.JsonSave(config)))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.is_dir()) == ["config", "state"]
    with reader.Checkpointer(reader.CompositeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=reader.args.Composite(
            state=reader.args.StandardRestore(abstract_of(state)), config=reader.args.JsonRestore()))
    assert_trees_bit_equal(restored["state"], state, where="composite state")
    assert_shardings_match(restored["state"], state, "composite state")
    assert restored["config"] == config
    assert type(restored["config"]["layers"][0]) is int


def _json_types(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_types(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_types(item) for item in value]
    return type(value)


@pytest.mark.parametrize("writer", BOTH_WAYS)
def test_restore_json_item(writer: str, tmp_path: Path) -> None:
    value = {"int": 3, "float": 0.1, "big": 2**53 + 1, "negative": -(2**40),
             "list": [1.5, "two", None, False], "nested": {"u": "µ"}}
    lib, reader = LIBRARIES[writer], reader_of(writer)
    with lib.Checkpointer(lib.JsonCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=lib.args.JsonSave(value))
    with reader.Checkpointer(reader.JsonCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=reader.args.JsonRestore())
    assert restored == value
    assert _json_types(restored) == _json_types(value)


ARRAYS: dict[str, Callable[[], jax.Array]] = {
    "single_device": lambda: jnp.asarray(np.random.default_rng(8).standard_normal((12, 9)), jnp.float32),
    "sharded_8": lambda: jax.device_put(
        np.random.default_rng(7).standard_normal((16, 6)).astype(np.float32),
        NamedSharding(make_mesh((4, 2), ("data", "model")), P("data", "model"))),
    "bf16": lambda: jnp.asarray(np.random.default_rng(9).standard_normal((4, 7)), jnp.bfloat16),
}


@pytest.mark.parametrize("kind", sorted(ARRAYS))
@pytest.mark.parametrize("writer", BOTH_WAYS)
def test_restore_array_item(writer: str, kind: str, tmp_path: Path) -> None:
    array = ARRAYS[kind]()
    lib, reader = LIBRARIES[writer], reader_of(writer)
    with lib.Checkpointer(lib.ArrayCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=lib.args.ArraySave(array))
    other = NamedSharding(make_mesh((2, 4), ("a", "b")), P("b", None))
    restore_args = reader.ArrayRestoreArgs(sharding=other, global_shape=array.shape, dtype=array.dtype)
    with reader.Checkpointer(reader.ArrayCheckpointHandler()) as checkpointer:
        with_args = checkpointer.restore(tmp_path / "ckpt",
                                         args=reader.args.ArrayRestore(restore_args=restore_args))
        without_args = checkpointer.restore(tmp_path / "ckpt")
    assert_trees_bit_equal(with_args, array, where=f"{kind} with args")
    assert sharding_matches(with_args.sharding, other)
    assert_trees_bit_equal(without_args, array, where=f"{kind} without args")


JAX_KEYS: dict[str, Callable[[], jax.Array]] = {
    "typed_threefry": lambda: jax.random.key(42),
    "raw_uint32": lambda: jax.random.PRNGKey(1234),
    "typed_split": lambda: jax.random.split(jax.random.key(5))[1],
}


@pytest.mark.parametrize("kind", sorted(JAX_KEYS))
@pytest.mark.parametrize("writer", BOTH_WAYS)
def test_restore_jax_random_key(writer: str, kind: str, tmp_path: Path) -> None:
    key = JAX_KEYS[kind]()
    lib, reader = LIBRARIES[writer], reader_of(writer)
    with lib.Checkpointer(lib.JaxRandomKeyCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=lib.args.JaxRandomKeySave(key))
    with reader.Checkpointer(reader.JaxRandomKeyCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=reader.args.JaxRandomKeyRestore())
    is_typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    assert jnp.issubdtype(restored.dtype, jax.dtypes.prng_key) == is_typed
    if is_typed:
        assert str(jax.random.key_impl(restored)) == str(jax.random.key_impl(key))
    assert digest(restored) == digest(key)
    # The restored key draws the same numbers.
    assert digest(jax.random.uniform(restored, (4,))) == digest(jax.random.uniform(key, (4,)))


@pytest.mark.parametrize("writer", BOTH_WAYS)
def test_restore_numpy_random_state(writer: str, tmp_path: Path) -> None:
    generator = np.random.RandomState(3)
    generator.standard_normal(5)  # move off the seed state, incl. a cached gaussian
    state = generator.get_state()
    lib, reader = LIBRARIES[writer], reader_of(writer)
    with lib.Checkpointer(lib.NumpyRandomKeyCheckpointHandler()) as checkpointer:
        checkpointer.save(tmp_path / "ckpt", args=lib.args.NumpyRandomKeySave(state))
    with reader.Checkpointer(reader.NumpyRandomKeyCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=reader.args.NumpyRandomKeyRestore())
    assert len(restored) == len(state) == 5
    assert restored[0] == state[0]
    assert digest(restored[1]) == digest(state[1])
    assert [int(restored[2]), int(restored[3]), float(restored[4])] == list(state[2:])
    resumed = np.random.RandomState()
    resumed.set_state(restored)
    assert digest(resumed.standard_normal(6)) == digest(generator.standard_normal(6))


# ---------------------------------------------------------------- a manager directory

LOSSES = {100: 2.0, 200: 1.1, 300: 1.4, 400: 0.8, 500: 1.6}
KEPT = sorted(sorted(LOSSES, key=LOSSES.__getitem__)[:3])  # max_to_keep=3, lowest losses


def _state(step: int) -> dict[str, Any]:
    rng = np.random.default_rng(step)
    mesh = make_mesh((4, 2), ("data", "model"))
    return {
        "params": {
            "kernel": jax.device_put(jnp.asarray(rng.standard_normal((8, 6)), jnp.float32),
                                     NamedSharding(mesh, P("data", "model"))),
            "scale": jnp.asarray(rng.standard_normal(3), jnp.bfloat16),
        },
        "opt": [jnp.asarray(rng.integers(0, 100, 4), jnp.int32), np.float64(step / 7)],
        "step": step,
    }


def _options(lib: Any) -> Any:
    return lib.CheckpointManagerOptions(
        step_prefix="run", step_format_fixed_length=8, best_fn=lambda metrics: metrics["loss"],
        best_mode="min", max_to_keep=3)


def _write_manager(lib: Any, root: Path) -> None:
    with lib.CheckpointManager(root, options=_options(lib), item_names=("state", "config"),
                               metadata={"experiment": "interop", "version": 2}) as manager:
        for step, loss in LOSSES.items():
            assert manager.save(step, args=lib.args.Composite(
                state=lib.args.StandardSave(_state(step)), config=lib.args.JsonSave({"step": step})),
                metrics={"loss": loss}, custom_metadata={"tag": f"s{step}"})
        manager.wait_until_finished()
        assert list(manager.all_steps()) == KEPT


@pytest.mark.parametrize("writer", BOTH_WAYS)
def test_manager_directory_lists_and_restores(writer: str, tmp_path: Path) -> None:
    root = tmp_path / "run"
    _write_manager(LIBRARIES[writer], root)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("run_")) == [
        f"run_{step:08d}" for step in KEPT]
    lib = reader_of(writer)
    with lib.CheckpointManager(root, options=_options(lib), item_names=("state", "config")) as manager:
        assert list(manager.all_steps()) == KEPT
        assert manager.latest_step() == max(KEPT)
        assert manager.best_step() == min(LOSSES, key=LOSSES.__getitem__)
        assert dict(manager.metadata().custom_metadata) == {"experiment": "interop", "version": 2}
        for step in KEPT:
            expected = _state(step)
            restored = manager.restore(step, args=lib.args.Composite(
                state=lib.args.StandardRestore(abstract_of(expected)), config=lib.args.JsonRestore()))
            assert_trees_bit_equal(restored["state"], expected, where=f"step {step}")
            assert_shardings_match(restored["state"], expected, f"step {step}")
            assert restored["config"] == {"step": step}
            assert manager.metrics(step) == {"loss": LOSSES[step]}
            assert dict(manager.metadata(step).custom_metadata) == {"tag": f"s{step}"}


def test_manager_restores_latest_from_recorded_handlers(tmp_path: Path) -> None:
    # orbax -> jaxpoint: restore(None) finds the latest step and each item's handler.
    root = tmp_path / "run"
    _write_manager(orbax_ocp, root)
    handlers = {"state": ocp.StandardCheckpointHandler(), "config": ocp.JsonCheckpointHandler()}
    with ocp.CheckpointManager(root, options=_options(ocp), item_handlers=handlers) as manager:
        latest = manager.latest_step()
        restored = manager.restore(None)
    assert_trees_bit_equal(restored["state"], _state(latest), where="latest")
    assert restored["config"] == {"step": latest}


def test_orbax_manager_reads_default_layout(tmp_path: Path) -> None:
    # jaxpoint -> orbax, no options: folders named by the bare step, one item ("default").
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
            restored = manager.restore(step, args=orbax_ocp.args.StandardRestore(abstract_of(state)))
            assert_trees_bit_equal(restored, state, where=f"step {step}")
