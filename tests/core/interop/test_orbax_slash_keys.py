"""Orbax round-trips tree keys that contain '/'; jaxpoint reads them (keys are data) but
keeps refusing to write them."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.interop.interop_support import ocp, orbax_ocp
from jaxpoint.core.errors import InvalidNameError


def _orbax_save_with_slash_keys(path: Path) -> dict:
    tree = {"enc/layer_0": {"w": jnp.arange(6.0).reshape(2, 3)}, "plain": np.arange(4),
            "opt/count": 5, "name/s": "adam"}
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
    return tree


def test_checkpoint_with_slash_keys_restores_whole(tmp_path: Path) -> None:
    tree = _orbax_save_with_slash_keys(tmp_path / "c")
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c")
    assert sorted(restored) == ["enc/layer_0", "name/s", "opt/count", "plain"]
    assert np.array_equal(restored["enc/layer_0"]["w"], tree["enc/layer_0"]["w"])
    assert restored["opt/count"] == 5 and restored["name/s"] == "adam"
    target = jax.tree.map(lambda x: x, tree)
    onto = ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(target))
    assert np.array_equal(onto["enc/layer_0"]["w"], tree["enc/layer_0"]["w"])
    assert np.array_equal(onto["plain"], tree["plain"])


def test_partial_restore_of_other_keys_and_metadata(tmp_path: Path) -> None:
    _orbax_save_with_slash_keys(tmp_path / "c")
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(
        {"plain": np.zeros(4, np.int64)}, partial_restore=True))
    assert list(restored) == ["plain"] and restored["plain"].tolist() == [0, 1, 2, 3]
    metadata = ocp.PyTreeCheckpointer().metadata(tmp_path / "c").item_metadata
    assert metadata["enc/layer_0"]["w"].shape == (2, 3)


def test_writing_slash_keys_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidNameError, match=r"Expected tree keys without '/'.*'a/b'.*rename"):
        ocp.save(tmp_path / "c", {"a/b": jnp.ones(2)})


def test_keys_that_would_escape_are_refused_when_reading(tmp_path: Path) -> None:
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "c", {"a": np.ones(2)})
    metadata_file = tmp_path / "c" / "_METADATA"
    metadata_file.write_text(metadata_file.read_text().replace('"a"', '"../a"'))
    with pytest.raises(ocp.CorruptCheckpointError, match=r"'\.\./a'.*escape"):
        ocp.PyTreeCheckpointer().restore(tmp_path / "c")
