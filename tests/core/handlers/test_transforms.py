"""Transforms and PLACEHOLDER on restore, with Orbax's semantics (checked against the real
orbax-checkpoint where both can run the same code)."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import orbax.checkpoint as orbax_ocp
import pytest
from jaxpoint.core.errors import InvalidArgumentError, TreeMismatchError

SDS = jax.ShapeDtypeStruct


def _saved(tmp_path):
    tree = {"a": np.arange(4, dtype=np.float32), "b": np.ones(2, np.float32),
            "layer_0": {"w": np.full(3, 10.0, np.float32)}, "layer_1": {"w": np.full(3, 11.0, np.float32)}}
    ocp.save(tmp_path / "c", tree)
    return tmp_path / "c"


def _restore(path, item, transforms, **kwargs):
    return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=item, transforms=transforms, **kwargs))


def test_renaming_a_key(tmp_path):
    path = _saved(tmp_path)
    item = {"x": SDS((4,), jnp.float32), "b": SDS((2,), jnp.float32)}
    restored = _restore(path, item, {"x": ocp.Transform(original_key="a")})
    assert sorted(restored) == ["b", "x"]
    assert restored["x"].tolist() == [0, 1, 2, 3] and restored["b"].tolist() == [1, 1]
    assert isinstance(restored["x"], jax.Array)


def test_new_leaf_by_value_fn(tmp_path):
    path = _saved(tmp_path)
    item = {"a": np.zeros(4, np.float32), "doubled": np.zeros(4, np.float32)}
    restored = _restore(path, item, {"doubled": ocp.Transform(original_key="a",
                                                                value_fn=lambda v: v * 2)})
    assert restored["a"].tolist() == [0, 1, 2, 3]
    assert restored["doubled"].tolist() == [0, 2, 4, 6]


def test_use_fallback_keeps_the_item_value(tmp_path):
    path = _saved(tmp_path)
    item = {"a": np.full(4, -1.0, np.float32), "fresh": np.array([7, 8])}
    restored = _restore(path, item, {"a": ocp.Transform(use_fallback=True),
                                     "fresh": ocp.Transform(use_fallback=True)})
    assert restored["a"].tolist() == [-1, -1, -1, -1]  # in the checkpoint, not read
    assert restored["fresh"].tolist() == [7, 8]
    # Without default_to_original, use_fallback takes the checkpoint's value instead ...
    back = _restore(path, {"a": np.zeros(4, np.float32), "b": np.zeros(2, np.float32)},
                    {"a": ocp.Transform(use_fallback=True)}, transforms_default_to_original=False)
    assert back["a"].tolist() == [0, 1, 2, 3]
    assert back["b"].tolist() == [0, 0]  # ... and keys no transform names come from item


def test_regex_keys_with_back_references(tmp_path):
    path = _saved(tmp_path)
    item = {"block_0": {"w": SDS((3,), jnp.float32)}, "block_1": {"w": SDS((3,), jnp.float32)}}
    restored = _restore(path, item, {r"block_(\d+)/w": ocp.Transform(original_key=r"layer_\1/w")})
    assert restored["block_0"]["w"].tolist() == [10, 10, 10]
    assert restored["block_1"]["w"].tolist() == [11, 11, 11]


def test_multi_value_fn_reads_the_inputs_it_names(tmp_path):
    path = _saved(tmp_path)
    transform = ocp.RestoreTransform(
        multi_value_fn=lambda key, tree, args: tree["layer_0"]["w"] + tree["layer_1"]["w"],
        multi_value_fn_input_args={r"layer_\d/w": ocp.RestoreArgs(restore_type=np.ndarray)})
    restored = _restore(path, {"sum": np.zeros(3, np.float32)}, {"sum": transform})
    assert restored["sum"].tolist() == [21, 21, 21]
    with pytest.raises(InvalidArgumentError, match=r"RestoreTransform.*'sum'.*multi_value_fn_input_args"):
        _restore(path, {"sum": np.zeros(3)}, {"sum": ocp.Transform(multi_value_fn=lambda k, t: 0)})


def test_placeholder_skips_a_subtree(tmp_path):
    path = _saved(tmp_path)
    saved = {"a": np.zeros(4, np.float32), "b": np.zeros(2, np.float32),
             "layer_0": {"w": np.zeros(3, np.float32)}, "layer_1": {"w": np.zeros(3, np.float32)}}
    # Orbax's form: a PLACEHOLDER at every leaf of the skipped subtree.
    target = dict(saved, layer_1=jax.tree.map(lambda _: ocp.PLACEHOLDER, saved["layer_1"]), b=ocp.PLACEHOLDER)
    restored = ocp.StandardCheckpointer().restore(path, target)
    assert restored["layer_1"]["w"] is ocp.PLACEHOLDER and restored["b"] is ocp.PLACEHOLDER
    assert restored["layer_0"]["w"].tolist() == [10, 10, 10]
    # One PLACEHOLDER standing for the whole saved subtree.
    whole = ocp.StandardCheckpointer().restore(path, dict(saved, layer_0=ocp.PLACEHOLDER))
    assert whole["layer_0"] is ocp.PLACEHOLDER and whole["layer_1"]["w"].tolist() == [11, 11, 11]
    with pytest.raises(TreeMismatchError, match=r"target has keys the checkpoint lacks: \['nope'\]"):
        ocp.StandardCheckpointer().restore(path, dict(saved, nope=ocp.PLACEHOLDER))


def test_transform_errors_say_what_to_fix(tmp_path):
    path = _saved(tmp_path)
    with pytest.raises(TreeMismatchError, match=r"Expected key 'zz'.*for key 'x'.*original_key"):
        _restore(path, {"x": np.zeros(4)}, {"x": ocp.Transform(original_key="zz")})
    with pytest.raises(InvalidArgumentError, match="Expected item .* with transforms"):
        _restore(path, None, {"x": ocp.Transform(original_key="a")})
    with pytest.raises(InvalidArgumentError, match="legacy_transform_fn is not supported"):
        ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
            legacy_transform_fn=lambda *a: a))
    with pytest.raises(InvalidArgumentError, match="transforms_default_to_original=False, got no"):
        ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
            transforms_default_to_original=False))
    with pytest.raises(InvalidArgumentError, match="got original_key and use_fallback"):
        ocp.Transform(original_key="a", use_fallback=True)
    with pytest.raises(InvalidArgumentError, match="partial_restore=False with transforms"):
        _restore(path, {"x": np.zeros(4)}, {"x": ocp.Transform(original_key="a")}, partial_restore=True)
    with pytest.raises(InvalidArgumentError, match="either transforms or SingleReplicaArrayRestoreArgs"):
        _restore(path, {"x": np.zeros(4)}, {"x": ocp.Transform(original_key="a")},
                 restore_args={"x": ocp.SingleReplicaArrayRestoreArgs()})


def test_transform_utils_match_orbax():
    original = {"a": 1, "b": {"c": 5, "d": [0, 1, 2]}, "b1": {"c": 2}}
    new = {"a1": 0, "b": {"c": 0}, "x1": {"c": 0}, "g": 5}
    for lib in (ocp, orbax_ocp):
        transforms = {"a1": lib.Transform(original_key="a"),
                      "b": {"c": lib.Transform(multi_value_fn=lambda k, t: t["b"]["c"] * 2)},
                      r"x(\d)/c": lib.Transform(original_key=r"b\1/c")}
        assert lib.transform_utils.apply_transformations(original, transforms, new) == {
            "a1": 1, "b": {"c": 10}, "x1": {"c": 2}, "g": 5}
        assert lib.transform_utils.intersect_trees({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"b": 3}


def test_orbax_code_with_transforms_on_an_orbax_checkpoint(tmp_path):
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "c", {"params": {"dense": {"kernel": np.arange(6.0).reshape(2, 3)},
                                                      "old_bias": np.ones(3)}, "step": 3})

    def orbax_style_restore(lib):  # as written for Orbax, run with either library
        item = {"params": {"dense": {"kernel": np.zeros((2, 3))}, "bias": np.zeros(3),
                           "scale": np.ones(3)}, "step": 0}
        restore_args = jax.tree.map(lambda x: lib.RestoreArgs(restore_type=type(x)), item)
        transforms = {"params": {"bias": lib.Transform(original_key="params/old_bias",
                                                       value_fn=lambda v: v + 1),
                                 "scale": lib.Transform(use_fallback=True)}}
        return lib.PyTreeCheckpointer().restore(tmp_path / "c", args=lib.args.PyTreeRestore(
            item=item, restore_args=restore_args, transforms=transforms))

    ours, theirs = orbax_style_restore(ocp), orbax_style_restore(orbax_ocp)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for mine, reference in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        assert np.array_equal(mine, reference) and type(mine) is type(reference)
    assert ours["params"]["bias"].tolist() == [2, 2, 2] and ours["step"] == 3


def test_orbax_names_resolve_in_a_fresh_process():
    code = ("import jaxpoint.core as ocp; "
            "assert ocp.PLACEHOLDER is ...; "
            "assert issubclass(ocp.RestoreTransform, ocp.Transform); "
            "assert ocp.transform_utils.apply_transformations and ocp.transform_utils.intersect_trees; "
            "assert ocp.metadata.TreeMetadata and ocp.metadata.ArrayMetadata and "
            "ocp.metadata.ShardingMetadata and ocp.metadata.StepMetadata and ocp.metadata.RootMetadata; "
            "assert {'PLACEHOLDER', 'Transform', 'metadata', 'transform_utils'} <= set(dir(ocp))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_placeholder_saved_by_orbax_restores_as_placeholder(tmp_path):
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "c", {"a": np.ones(2), "b": orbax_ocp.PLACEHOLDER})
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c")
    assert restored["a"].tolist() == [1, 1] and restored["b"] is ocp.PLACEHOLDER
    assert ocp.PyTreeCheckpointer().metadata(tmp_path / "c").item_metadata["b"] is ocp.PLACEHOLDER
