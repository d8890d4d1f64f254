"""Helpers for users' checkpoint tests (Orbax's `test_utils` names): trees, folders, asserts.

Facaded by `ocp.test_utils`; they build real arrays and real folders, nothing is faked.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxpoint.core.storage import TMP_SUFFIX
from jaxpoint.core.tree.flat_dict import to_flat_dict

PathLike = str | os.PathLike[str]


def erase_and_create_empty(directory: PathLike) -> epath.Path:
    """Creates `directory` empty, deleting whatever was there first. For tests only."""
    path = epath.Path(directory)
    if path.exists():
        path.rmtree()
    path.mkdir(parents=True)
    return path


def empty_directory(directory: PathLike) -> bool:
    """Deletes everything inside `directory`; False when it does not exist."""
    path = epath.Path(directory)
    if not path.exists():
        return False
    for child in path.iterdir():
        child.rmtree() if child.is_dir() else child.unlink()
    return True


def is_leaf(value: Any) -> bool:
    """Leaves of the trees these helpers map over: arrays, meshes and partition specs."""
    return isinstance(value, np.ndarray | Mesh | PartitionSpec)


def setup_pytree(add: int = 0) -> dict[str, Any]:
    """Orbax's standard small numpy test tree (`a`, `b`, `c.a`, `c.e`), plus `add`."""
    tree = {"a": np.arange(8) * 1, "b": np.arange(16) * 2,
            "c": {"a": np.arange(8).reshape((2, 4)) * 3, "e": np.arange(16).reshape((4, 4)) * 4}}
    return jax.tree.map(lambda x: x + add, tree, is_leaf=is_leaf)


def create_sharded_array(arr: Any, mesh: Mesh, mesh_axes: PartitionSpec) -> jax.Array:
    """`arr` as a jax.Array sharded over `mesh` by `mesh_axes`."""
    arr = np.asarray(arr)
    return jax.make_array_from_callback(arr.shape, NamedSharding(mesh, mesh_axes),
                                        lambda index: np.asarray(arr[index], dtype=arr.dtype))


def setup_sharded_pytree(pytree: Any = None, reverse_devices: bool = False,
                         devices: list[Any] | None = None) -> tuple[Any, Any, Any]:
    """`setup_pytree()` sharded 0-d, 1-d and 2-d over the devices; returns (tree, meshes, axes).

    Needs an even number of devices (the 2-d mesh is 2 x n/2).
    """
    devices = list(devices if devices is not None else jax.devices())
    if reverse_devices:
        devices.reverse()
    grid = np.asarray(devices)
    mesh_2d, mesh_1d = Mesh(grid.reshape((2, len(devices) // 2)), ("x", "y")), Mesh(grid, ("x",))
    meshes = {"a": mesh_1d, "b": mesh_1d, "c": {"a": mesh_2d, "e": mesh_2d}}
    axes = {"a": PartitionSpec(None), "b": PartitionSpec("x"),
            "c": {"a": PartitionSpec("x", "y"), "e": PartitionSpec("x", "y")}}
    tree = jax.tree.map(create_sharded_array, pytree if pytree is not None else setup_pytree(),
                        meshes, axes, is_leaf=is_leaf)
    return tree, meshes, axes


def assert_tree_equal(testclass: Any, expected: Any, actual: Any) -> None:
    """Fails with the first differing key path: structure, types, dtypes and values.

    `testclass` (a unittest.TestCase in Orbax's tests) is accepted and unused; plain
    `AssertionError`s work under pytest and unittest alike.
    """
    del testclass
    expected_flat, actual_flat = to_flat_dict(expected), to_flat_dict(actual)
    if set(expected_flat) != set(actual_flat):
        raise AssertionError(
            f"Expected tree keys {sorted(expected_flat)}, got {sorted(actual_flat)}.")
    for key, want in expected_flat.items():
        got = actual_flat[key]
        if not isinstance(got, type(want)) and not (isinstance(want, jax.Array)
                                                   and isinstance(got, jax.Array)):
            raise AssertionError(
                f"Expected {type(want).__name__} at {key}, got {type(got).__name__}.")
        if hasattr(want, "dtype") and np.dtype(want.dtype) != np.dtype(got.dtype):
            raise AssertionError(f"Expected dtype {want.dtype} at {key}, got {got.dtype}.")
        if isinstance(want, jax.Array) and jax.dtypes.issubdtype(want.dtype, jax.dtypes.prng_key):
            want, got = jax.random.key_data(want), jax.random.key_data(got)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=f"at {key}")


def save_fake_tmp_dir(directory: PathLike, step: int, item: str,
                      subdirs: list[str] | None = None,
                      step_prefix: str | None = None) -> epath.Path:
    """Leaves the tmp folder of an interrupted save of `step` (as a preempted job would)."""
    step_name = f"{step_prefix or ''}{step}"
    tmp = epath.Path(directory) / f"{step_name}{TMP_SUFFIX}"
    item_dir = tmp / item
    item_dir.mkdir(parents=True, exist_ok=True)
    for sub in subdirs or []:
        (item_dir / sub).mkdir(parents=True, exist_ok=True)
    return tmp
