"""Deterministic benchmark states, built with numpy only (baselines never import jax).

Every leaf is a window of one shared pool of normally distributed float32 values, so
states are cheap to build, compress like real weights (zstd saves ~8%), and can be
checked after a restore without keeping a copy of the state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import ml_dtypes
import numpy as np

MIB = 2**20
GIB = 2**30
_POOL_ELEMENTS = 4 * MIB  # 16 MiB of float32: larger than zstd's window at level 1-3.
_SAMPLES_PER_LEAF = 257

Tree = dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class StateSpec:
    """What to build: `dense` (equal float32 leaves), `small` (many tiny leaves) or `mixed`
    (bf16 params with float32 optimizer moments and an int32 step)."""

    kind: str
    total_bytes: int
    leaf_count: int

    @property
    def id(self) -> str:
        """A short name for file names and case ids: f32-1GiB, small-10000x4KiB, bf16mix-1GiB."""
        if self.kind == "small":
            return f"small-{self.leaf_count}x{_size_label(self.total_bytes // self.leaf_count)}"
        prefix = "f32" if self.kind == "dense" else "bf16mix"
        return f"{prefix}-{_size_label(self.total_bytes)}"

    @property
    def label(self) -> str:
        if self.kind == "dense":
            return f"{_size_label(self.total_bytes)} ({self.leaf_count} x f32)"
        if self.kind == "small":
            return f"{self.leaf_count} x {_size_label(self.total_bytes // self.leaf_count)}"
        return f"{_size_label(self.total_bytes)} bf16 mixed"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StateSpec:
        return cls(**data)


def _size_label(num_bytes: int) -> str:
    if num_bytes >= GIB and num_bytes % GIB == 0:
        return f"{num_bytes // GIB}GiB"
    if num_bytes >= MIB and num_bytes % MIB == 0:
        return f"{num_bytes // MIB}MiB"
    return f"{num_bytes // 1024}KiB"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeafSpec:
    """One leaf: where it sits in the tree and how its values are derived from the pool."""

    path: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def name(self) -> str:
        return "/".join(self.path)


def value_pool() -> np.ndarray:
    """The shared value pool (16 MiB); build it once per process and pass it around."""
    return np.random.default_rng(0).standard_normal(_POOL_ELEMENTS, dtype=np.float32)


def _offset(index: int) -> int:
    return (index * 1_000_003) % _POOL_ELEMENTS


def leaf_specs(spec: StateSpec) -> list[LeafSpec]:
    """The leaves of `spec`, in a fixed order."""
    if spec.kind in ("dense", "small"):
        elements = spec.total_bytes // spec.leaf_count // 4
        shape = (elements // 1024, 1024) if elements >= 4096 else (elements,)
        width = len(str(spec.leaf_count - 1))
        return [
            LeafSpec(path=(f"p{i:0{width}d}",), shape=shape, dtype=np.dtype(np.float32),
                     offset=_offset(i))
            for i in range(spec.leaf_count)
        ]
    if spec.kind == "mixed":
        return _mixed_leaf_specs(spec)
    raise ValueError(f"Expected state kind dense, small or mixed, got {spec.kind!r}.")


def _mixed_leaf_specs(spec: StateSpec) -> list[LeafSpec]:
    # Per parameter element: 2 bytes of bf16 param + 4 + 4 bytes of float32 moments.
    layers = spec.leaf_count
    rows = max(4, spec.total_bytes // (10 * layers * 1024) // 4 * 4)
    bf16, f32 = np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32)
    leaves = []
    for group, dtype in (("params", bf16), ("mu", f32), ("nu", f32)):
        prefix = ("params",) if group == "params" else ("opt_state", group)
        for layer in range(layers):
            for part, shape in (("kernel", (rows, 1024)), ("bias", (1024,))):
                leaves.append(LeafSpec(path=(*prefix, f"layer_{layer:02d}", part),
                                       shape=shape, dtype=dtype,
                                       offset=_offset(len(leaves))))
    leaves.append(LeafSpec(path=("step",), shape=(), dtype=np.dtype(np.int32), offset=0))
    return leaves


def _values(leaf: LeafSpec, pool: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
    if leaf.dtype == np.int32:
        return np.full(flat_index.shape, 7, dtype=np.int32)
    return pool[(leaf.offset + flat_index) % _POOL_ELEMENTS].astype(leaf.dtype)


def build_leaf(leaf: LeafSpec, pool: np.ndarray) -> np.ndarray:
    """Fresh, fully written memory holding `leaf`'s values."""
    out = np.empty(leaf.shape, dtype=leaf.dtype)
    flat = out.reshape(-1)
    if leaf.dtype == np.int32:
        flat[:] = 7
        return out
    position, start = 0, leaf.offset
    while position < flat.size:
        count = min(flat.size - position, _POOL_ELEMENTS - start)
        flat[position:position + count] = pool[start:start + count]
        position += count
        start = 0
    return out


def state_bytes(spec: StateSpec) -> int:
    """The exact number of array bytes in `spec` (the size used for every GB/s figure)."""
    return sum(leaf.nbytes for leaf in leaf_specs(spec))


def build_numpy(spec: StateSpec) -> list[tuple[LeafSpec, np.ndarray]]:
    pool = value_pool()
    return [(leaf, build_leaf(leaf, pool)) for leaf in leaf_specs(spec)]


def nest(pairs: Iterable[tuple[tuple[str, ...], Any]]) -> Tree:
    """A nested dict from (path, value) pairs."""
    tree: Tree = {}
    for path, value in pairs:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def get(tree: Tree, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def check_leaf(leaf: LeafSpec, array: np.ndarray, pool: np.ndarray, *,
               index: tuple[slice, ...] | None = None) -> None:
    """Raise if sampled values of `array` (the whole leaf, or the part at `index`) are wrong."""
    if tuple(array.shape) != _shape_at(leaf.shape, index) or array.dtype != leaf.dtype:
        raise AssertionError(
            f"Expected {leaf.dtype}{list(leaf.shape)} at {leaf.name} (index {index}), "
            f"got {array.dtype}{list(array.shape)}.")
    flat = np.asarray(array).reshape(-1)
    if flat.size == 0:
        return
    local = np.unique(np.linspace(0, flat.size - 1, _SAMPLES_PER_LEAF).astype(np.int64))
    global_index = _global_flat_index(leaf.shape, index, local)
    expected = _values(leaf, pool, global_index)
    if not np.array_equal(flat[local], expected):
        bad = int(np.flatnonzero(flat[local] != expected)[0])
        raise AssertionError(
            f"Expected {expected[bad]!r} at element {int(global_index[bad])} of {leaf.name}, "
            f"got {flat[local][bad]!r}: the restored values differ from what was saved.")


def _shape_at(shape: tuple[int, ...], index: tuple[slice, ...] | None) -> tuple[int, ...]:
    if index is None:
        return tuple(shape)
    return tuple(len(range(*s.indices(n))) for s, n in zip(index, shape, strict=True))


def _global_flat_index(shape: tuple[int, ...], index: tuple[slice, ...] | None,
                       local: np.ndarray) -> np.ndarray:
    if index is None or not shape:
        return local
    local_shape = _shape_at(shape, index)
    coords = np.unravel_index(local, local_shape)
    starts = [s.indices(n)[0] for s, n in zip(index, shape, strict=True)]
    return np.ravel_multi_index(
        tuple(c + start for c, start in zip(coords, starts, strict=True)), shape)
