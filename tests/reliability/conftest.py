"""Fixtures of the integrity, resource-fault and hostile-input tests.

`small_disk` mounts a real tmpfs of a few MiB (the suite runs as root, locally and in
CI), so "disk full" and "read-only file system" come from the kernel, not from a mock.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path`; unmounted (remounted writable first) on exit."""
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _run("mount", "-o", "remount,rw", str(path))
        _run("umount", str(path))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs: the disk of the disk-full and read-only tests."""
    with mounted_tmpfs(tmp_path / "disk", "8m") as path:
        yield path


@pytest.fixture(scope="module")
def fast_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 256 MiB tmpfs for tests that copy a checkpoint hundreds of times."""
    with mounted_tmpfs(tmp_path_factory.mktemp("fast_disk"), "256m") as path:
        yield path


def remount_read_only(path: Path) -> None:
    _run("mount", "-o", "remount,ro", str(path))


def fill_disk(path: Path, *, leave_bytes: int) -> Path:
    """Writes a filler file until about `leave_bytes` stay free on the file system of `path`."""
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    filler = path / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
    return filler


def mixed_tree() -> dict[str, Any]:
    """Sharded, replicated, small (bulk path) and large arrays, scalars, strings, empties."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(4, 2), ("x", "y"))
    sharded = jax.device_put(
        jnp.arange(64 * 300, dtype=jnp.float32).reshape(64, 300),
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x", "y")))
    replicated = jax.device_put(jnp.ones((3, 5), jnp.bfloat16),
                                jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    return {
        "params": {"w": sharded, "b": np.arange(7, dtype=np.int32),
                   "big": np.linspace(0, 1, 70_000, dtype=np.float32)},
        "opt": [replicated, np.float64(2.5)],
        "step": 3, "name": "run-1", "empty": {}, "none": None,
    }


def _leaf_bytes(leaf: Any) -> tuple[str, str, tuple[int, ...], bytes]:
    array = np.asarray(leaf)
    return type(leaf).__name__, str(array.dtype), array.shape, array.tobytes()


def assert_bit_exact(restored: Any, expected: Any) -> None:
    """Same structure, leaf types, dtypes, shapes and bytes."""
    got, got_def = jax.tree_util.tree_flatten(restored)
    want, want_def = jax.tree_util.tree_flatten(expected)
    assert got_def == want_def
    assert [_leaf_bytes(x) for x in got] == [_leaf_bytes(x) for x in want]


def is_bit_exact(restored: Any, expected: Any) -> bool:
    try:
        assert_bit_exact(restored, expected)
    except AssertionError:
        return False
    return True


@pytest.fixture
def bit_exact() -> Callable[[Any, Any], None]:
    return assert_bit_exact


def data_files(root: Path) -> list[Path]:
    """Every file of a checkpoint whose bytes are read, in a stable order.

    Commit markers are left out: their text is never read, only their presence.
    """
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "commit_success.txt")
