"""Trees (Standard and PyTree items), each pattern written once and run in both
directions: one library writes into tmp_path, the other restores bit-exactly.
See `core.interop.libraries` for the writer cases.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.interop.interop_support import (
    P,
    abstract_of,
    assert_shardings_match,
    assert_trees_bit_equal,
    flatten,
    make_mesh,
    mixed_tree,
    orbax_ocp,
    restore_args_for,
)
from core.interop.libraries import (
    BOTH_WAYS,
    JAXPOINT_STANDARD,
    ORBAX_VARIANTS,
    case_id,
    checkpointer_for,
    reader_of,
    write_case,
)
from jax.sharding import NamedSharding, SingleDeviceSharding

# ---------------------------------------------------------------- Standard and PyTree


@pytest.mark.parametrize("case", [*ORBAX_VARIANTS, *JAXPOINT_STANDARD, ("jaxpoint", "pytree")], ids=case_id)
def test_restore_without_target(case: tuple[str, str], tmp_path: Path) -> None:
    tree = mixed_tree(seed=11)
    write_case(case, tmp_path / "ckpt", tree)
    with checkpointer_for(case) as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt")
    assert_trees_bit_equal(restored, tree, where=case_id(case))
    # Without a target each sharding comes back from the `_sharding` file.
    assert_shardings_match(restored, tree, case_id(case))


def _other_shardings() -> dict[str, jax.sharding.Sharding]:
    mesh = make_mesh((8, 1), ("rows", "cols"))
    return {
        "sharded": NamedSharding(mesh, P("rows", None)),
        "sharded_rows_bf16": NamedSharding(mesh, P()),
        "replicated": SingleDeviceSharding(jax.devices()[7]),
        "f32": NamedSharding(mesh, P(None, "cols")),
    }


@pytest.mark.parametrize(("case", "placement"), [
    *[(case, "other") for case in ORBAX_VARIANTS], (("jaxpoint", "standard_args"), "other"),
    *[(case, "saved") for case in JAXPOINT_STANDARD]], ids=lambda v: v if isinstance(v, str) else case_id(v))
def test_restore_onto_target(case: tuple[str, str], placement: str, tmp_path: Path) -> None:
    tree = mixed_tree(seed=12)
    write_case(case, tmp_path / "ckpt", tree)
    target = abstract_of(tree)
    if placement == "other":
        for key, sharding in _other_shardings().items():
            target[key] = jax.ShapeDtypeStruct(tree[key].shape, tree[key].dtype, sharding=sharding)
    with reader_of(case[0]).StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", target)
    assert_trees_bit_equal(restored, tree, where=case_id(case))
    assert_shardings_match(restored, target, case_id(case))


@pytest.mark.parametrize("writer", BOTH_WAYS)
def test_restore_pytree_with_restore_args(writer: str, tmp_path: Path) -> None:
    tree = mixed_tree(seed=5)
    write_case((writer, "pytree"), tmp_path / "ckpt", tree)
    lib, target = reader_of(writer), abstract_of(tree)
    args = lib.args.PyTreeRestore(item=target, restore_args=jax.tree.map(
        lambda leaf: restore_args_for(lib, leaf), target))
    with lib.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=args)
    assert_trees_bit_equal(restored, tree, where="PyTreeRestore")
    assert_shardings_match(restored, target, "PyTreeRestore")


@pytest.mark.parametrize("case", [*ORBAX_VARIANTS, ("jaxpoint", "standard_args")], ids=case_id)
def test_metadata_reports_shapes_and_dtypes(case: tuple[str, str], tmp_path: Path) -> None:
    tree = mixed_tree(seed=13)
    write_case(case, tmp_path / "ckpt", tree)
    with reader_of(case[0]).StandardCheckpointer() as checkpointer:
        metadata = flatten(checkpointer.metadata(tmp_path / "ckpt").item_metadata)
    assert sorted(metadata) == sorted(flatten(tree))
    for key, leaf in flatten(tree).items():
        if isinstance(leaf, jax.Array | np.ndarray):
            found = (tuple(metadata[key].shape), jnp.dtype(metadata[key].dtype))
            assert found == (leaf.shape, leaf.dtype), key


@pytest.mark.parametrize("writer", BOTH_WAYS)
def test_restore_pytree_non_array_leaves(writer: str, tmp_path: Path) -> None:
    # Strings, bools, None and empty containers are PyTree leaves/nodes orbax keeps.
    tree = {"name": "héllo wörld", "flag": writer == "orbax", "count": -3, "none": None,
            "empty_dict": {}, "empty_list": [], "x": jnp.arange(3, dtype=jnp.int32)}
    write_case((writer, "pytree"), tmp_path / "ckpt", tree)
    with reader_of(writer).PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt")
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    assert_trees_bit_equal(restored, tree, where="non-array leaves")


def test_orbax_restores_zero_size_arrays(tmp_path: Path) -> None:
    # One direction only: orbax 0.12.8 refuses to *save* zero-size arrays ("Cannot save
    # arrays with zero size") but reads them, so it must read what jaxpoint wrote.
    mesh = make_mesh((8,), ("x",))
    tree = {
        "empty_f32": jnp.zeros((0, 3), jnp.float32),
        "empty_bf16": jnp.zeros((5, 0), jnp.bfloat16),
        "empty_sharded": jax.device_put(jnp.zeros((0, 8), jnp.int32), NamedSharding(mesh, P(None, "x"))),
        "empty_np": np.zeros((0,), np.uint32),
        "full": jnp.arange(4, dtype=jnp.int8),
    }
    write_case(("jaxpoint", "pytree"), tmp_path / "ckpt", tree)
    target = abstract_of(tree)
    args = orbax_ocp.args.PyTreeRestore(item=target, restore_args=jax.tree.map(
        lambda leaf: restore_args_for(orbax_ocp, leaf), target))
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", args=args)
    assert_trees_bit_equal(restored, tree, where="zero-size")
