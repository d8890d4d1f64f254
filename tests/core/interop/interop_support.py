"""Shared helpers for the Orbax interop tests: the library under test, fixtures on disk,
bit-exact leaf digests and tree comparisons.

`ocp` below is the one place that names the library under test. Pointing it at
`orbax.checkpoint` runs every interop test with orbax on both sides, which is how the
tests themselves were validated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp  # the library under test
import numpy as np
import orbax.checkpoint as orbax_ocp  # the reference implementation, always real orbax
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA_DIR",
    "OrbaxCase",
    "P",
    "abstract_from_metadata_file",
    "abstract_of",
    "assert_leaves_match_expected",
    "assert_shards_consistent",
    "assert_trees_bit_equal",
    "copy_writable",
    "digest",
    "flatten",
    "load_case",
    "make_mesh",
    "mixed_tree",
    "ocp",
    "orbax_ocp",
    "read_json",
    "restore_args_for",
    "sharding_matches",
]

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "orbax-0.12.8"
DEVICE_COUNT = 8


# ---------------------------------------------------------------- fixtures on disk


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrbaxCase:
    """One checkpoint written by orbax 0.12.8 plus the `expected.json` beside it."""

    name: str
    directory: Path
    expected: Mapping[str, Any]

    @property
    def api(self) -> str:
        return self.expected["restore"]["api"]

    def copy_to(self, tmp_path: Path) -> Path:
        """Copies the case's checkpoint somewhere writable; returns the checkpoint path.

        The data folders may be read-only and must never change, so nothing that might
        write (a manager, a checkpointer that cleans up) opens them in place.
        """
        destination = tmp_path / self.name
        copy_writable(self.directory, destination)
        return destination / self.expected["restore"]["path"]


def load_case(name: str) -> OrbaxCase:
    directory = DATA_DIR / name
    return OrbaxCase(
        name=name, directory=directory, expected=read_json(directory / "expected.json")
    )


def copy_writable(source: Path, destination: Path) -> None:
    shutil.copytree(source, destination)
    for path in [destination, *destination.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------- digests and paths


def _key_name(key: Any) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    raise TypeError(f"Unexpected pytree key {key!r} ({type(key).__name__}).")


def flatten(tree: Any) -> dict[str, Any]:
    """Leaves by key path joined with '.', list indices as numbers (expected.json's names)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {".".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def _host_array(value: Any) -> np.ndarray:
    if isinstance(value, jax.Array) and jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
        value = jax.random.key_data(value)
    return np.asarray(value)


def digest(value: Any) -> dict[str, Any]:
    """dtype, shape and sha256 of the raw C-order bytes; bfloat16 hashed as its uint16 view."""
    array = _host_array(value)
    raw = array.view(np.uint16) if array.dtype == jnp.bfloat16 else array
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "sha256": hashlib.sha256(np.ascontiguousarray(raw).tobytes()).hexdigest(),
    }


# ---------------------------------------------------------------- assertions


def assert_shards_consistent(array: jax.Array) -> None:
    """Every addressable shard (each replica too) holds exactly its slice of the array."""
    full = _host_array(array)
    for shard in array.addressable_shards:
        piece = _host_array(shard.data)
        expected = full[shard.index]
        assert piece.shape == expected.shape, (
            f"shard on {shard.device} has shape {piece.shape}, expected {expected.shape}"
        )
        assert digest(piece) == digest(expected), (
            f"shard on {shard.device} at {shard.index} differs from the assembled array"
        )


def assert_leaves_match_expected(
    tree: Any, expected_leaves: Mapping[str, Any], *, prefix: str = "", where: str = ""
) -> None:
    """Compares every leaf of `tree` with an expected.json `leaves` mapping, bit-exactly."""
    wanted = {
        key[len(prefix) :]: spec for key, spec in expected_leaves.items() if key.startswith(prefix)
    }
    found = flatten(tree)
    assert sorted(found) == sorted(wanted), f"{where}: leaf paths differ"
    for key, spec in wanted.items():
        leaf = found[key]
        if "value" in spec:
            assert type(leaf) is type(spec["value"]) and leaf == spec["value"], (
                f"{where}: {key} is {leaf!r}, expected {spec['value']!r}"
            )
            continue
        assert isinstance(leaf, np.ndarray | jax.Array), (
            f"{where}: {key} restored as {type(leaf).__name__}, expected an array"
        )
        assert digest(leaf) == {k: spec[k] for k in ("dtype", "shape", "sha256")}, (
            f"{where}: {key} differs from expected.json"
        )
        if isinstance(leaf, jax.Array):
            assert_shards_consistent(leaf)


def _kind(value: Any) -> str:
    if isinstance(value, jax.Array):
        return "jax.Array"
    if isinstance(value, np.ndarray | np.generic):
        return "numpy"
    return type(value).__name__


def assert_trees_bit_equal(restored: Any, saved: Any, *, where: str = "") -> None:
    """Same leaf paths, same leaf kinds, bit-identical contents.

    A numpy scalar may come back as a 0-d numpy array (orbax does that); jax.Arrays must
    stay jax.Arrays and Python scalars keep their type and value.
    """
    found, wanted = flatten(restored), flatten(saved)
    assert sorted(found) == sorted(wanted), f"{where}: leaf paths differ"
    for key, original in wanted.items():
        leaf = found[key]
        assert _kind(leaf) == _kind(original), (
            f"{where}: {key} restored as {_kind(leaf)}, saved as {_kind(original)}"
        )
        if isinstance(original, bool | int | float | str):
            assert leaf == original, f"{where}: {key} is {leaf!r}, saved {original!r}"
            continue
        assert digest(leaf) == digest(original), f"{where}: {key} differs from what was saved"
        if isinstance(leaf, jax.Array):
            assert_shards_consistent(leaf)


def sharding_matches(actual: jax.sharding.Sharding, wanted: jax.sharding.Sharding) -> bool:
    """Same devices holding the same slices (mesh axis types aside)."""
    if isinstance(wanted, NamedSharding) and isinstance(actual, NamedSharding):
        same_mesh = (
            actual.mesh.axis_names == wanted.mesh.axis_names
            and actual.mesh.devices.shape == wanted.mesh.devices.shape
            and [d.id for d in actual.mesh.devices.flat] == [d.id for d in wanted.mesh.devices.flat]
        )
        return same_mesh and tuple(actual.spec) == tuple(wanted.spec)
    if isinstance(wanted, SingleDeviceSharding):
        return actual.device_set == wanted.device_set and actual.is_fully_replicated
    return actual == wanted


# ---------------------------------------------------------------- trees


def make_mesh(shape: tuple[int, ...], axis_names: tuple[str, ...]) -> Mesh:
    devices = jax.devices()
    assert len(devices) == DEVICE_COUNT, (
        f"expected {DEVICE_COUNT} CPU devices, found {len(devices)}: XLA_FLAGS must hold "
        f"--xla_force_host_platform_device_count={DEVICE_COUNT} before JAX starts"
    )
    return Mesh(np.asarray(devices).reshape(shape), axis_names)


def mixed_tree(seed: int = 0) -> dict[str, Any]:
    """A state with the leaf kinds Orbax users save: many dtypes, 0-d, sharded over 8
    devices, replicated, numpy arrays and Python scalars, nested dicts and lists."""
    rng = np.random.default_rng(seed)
    mesh = make_mesh((4, 2), ("data", "model"))
    return {
        "f32": jnp.asarray(rng.standard_normal((17, 5)), jnp.float32),
        "bf16": jnp.asarray(rng.standard_normal((4, 9)), jnp.bfloat16),
        "f16": jnp.asarray(rng.standard_normal(6), jnp.float16),
        "i8": jnp.asarray(rng.integers(-128, 128, 11, dtype=np.int8)),
        "u8": jnp.asarray(rng.integers(0, 256, (3, 3), dtype=np.uint8)),
        "i32": jnp.asarray(rng.integers(-(2**31), 2**31, 10, dtype=np.int32)),
        "u32": jnp.asarray(rng.integers(0, 2**32, (2, 5), dtype=np.uint32)),
        "bool": jnp.asarray(rng.random((2, 3)) > 0.5),
        "zero_d": jnp.asarray(rng.standard_normal(), jnp.float32),
        "zero_d_i32": jnp.asarray(-7, jnp.int32),
        "sharded": jax.device_put(
            jnp.asarray(rng.standard_normal((64, 8)), jnp.float32),
            NamedSharding(mesh, P("data", "model")),
        ),
        "sharded_rows_bf16": jax.device_put(
            jnp.asarray(rng.standard_normal((32, 3)), jnp.bfloat16),
            NamedSharding(mesh, P("data", None)),
        ),
        "replicated": jax.device_put(
            jnp.asarray(rng.integers(0, 1000, 6), jnp.int32), NamedSharding(mesh, P())
        ),
        "np_f64": rng.standard_normal((2, 3)),
        "np_i16": rng.integers(-1000, 1000, 5).astype(np.int16),
        "np_bool": rng.random(4) > 0.5,
        "py_int": 7,
        "py_float": 2.5,
        "nested": {
            "a": {"b": jnp.asarray(rng.standard_normal((2, 2)), jnp.float32)},
            "list": [
                jnp.asarray(rng.standard_normal(1), jnp.float32),
                {"t": jnp.asarray(rng.integers(0, 9, 2), jnp.int32)},
            ],
        },
    }


def abstract_of(tree: Any) -> Any:
    """The target a user passes to restore: ShapeDtypeStructs for jax.Arrays (with their
    sharding), numpy arrays and Python scalars as themselves."""

    def one(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array):
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
        return leaf

    return jax.tree.map(one, tree)


def restore_args_for(lib: Any, leaf: Any) -> Any:
    """`lib`'s RestoreArgs for one leaf of an abstract target (`lib`: either library)."""
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return lib.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype)
    if isinstance(leaf, np.ndarray):
        return lib.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype)
    return lib.RestoreArgs(restore_type=type(leaf))


def abstract_from_metadata_file(
    item_dir: Path,
    expected_leaves: Mapping[str, Any],
    sharding_for: Callable[[str, tuple[int, ...]], jax.sharding.Sharding],
    *,
    prefix: str = "",
) -> Any:
    """Builds a restore target from the item's `_METADATA` file (tree structure, list vs
    dict, numpy vs jax leaves, see FORMAT.md) and expected.json (shapes and dtypes).

    Reading the file directly keeps the target independent of both libraries.
    """
    tree_metadata = read_json(item_dir / "_METADATA")["tree_metadata"]
    root: dict[Any, Any] = {}
    for entry in tree_metadata.values():
        keys = entry["key_metadata"]
        name = ".".join(str(k["key"]) for k in keys)
        spec = expected_leaves[prefix + name]
        shape, dtype = tuple(spec["shape"]), jnp.dtype(spec["dtype"])
        value_type = entry["value_metadata"]["value_type"]
        if value_type == "np.ndarray":
            leaf: Any = np.zeros(shape, dtype)
        elif value_type == "jax.Array":
            leaf = jax.ShapeDtypeStruct(shape, dtype, sharding=sharding_for(name, shape))
        else:
            raise AssertionError(f"{item_dir}: no target rule for {name} of type {value_type}")
        node = root
        for key in keys[:-1]:
            node = node.setdefault(key["key"], {})
        node[keys[-1]["key"]] = leaf
    return _lists_where_indexed(root, tree_metadata)


def _lists_where_indexed(root: dict[Any, Any], tree_metadata: Mapping[str, Any]) -> Any:
    sequence_paths = {
        tuple(str(k["key"]) for k in entry["key_metadata"][:depth])
        for entry in tree_metadata.values()
        for depth, key in enumerate(entry["key_metadata"])
        if key["key_type"] == 1
    }

    def convert(node: Any, path: tuple[str, ...]) -> Any:
        if not isinstance(node, dict):
            return node
        children = {k: convert(v, (*path, str(k))) for k, v in node.items()}
        if path in sequence_paths:
            return [children[k] for k in sorted(children, key=int)]
        return children

    return convert(root, ())


def assert_shardings_match(restored: Any, wanted: Any, where: str) -> None:
    """Every restored jax.Array leaf has the sharding of the same leaf in `wanted`."""
    wanted_leaves = flatten(wanted)
    for key, leaf in flatten(restored).items():
        if isinstance(leaf, jax.Array):
            target = wanted_leaves[key].sharding
            assert sharding_matches(leaf.sharding, target), (
                f"{where}: {key} came back with {leaf.sharding}, expected {target}"
            )

