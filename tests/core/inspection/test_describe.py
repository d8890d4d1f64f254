"""`describe(path)`: the item tree of a step or item as JSON data, for every handler."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    UncommittedCheckpointError,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "orbax-0.12.8"


def _described(path: Path | str) -> dict:
    """`describe(path)` after a JSON round trip: proves it is plain data."""
    result = ocp.describe(path)
    assert json.loads(json.dumps(result)) == result
    return result


def _leaf(tree: dict, dotted: str) -> dict:
    node = tree
    for key in dotted.split("."):
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def test_describe_standard_item_lists_every_leaf(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("x",))
    sharded = jax.device_put(jnp.arange(6, dtype=jnp.int32),
                             jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x")))
    tree = {"w": np.zeros((2, 3), np.float32), "layers": [{"b": sharded}, {"name": "head"}],
            "empty": {}, "step": 7, "key": jax.random.key(1)}
    ocp.save(tmp_path / "ckpt", tree)
    described = _described(tmp_path / "ckpt")
    assert described["path"] == str(tmp_path / "ckpt")
    (item,) = described["items"].values()
    assert item["kind"] == "pytree"
    assert item["handler"].endswith("StandardCheckpointHandler")
    w = item["tree"]["w"]
    assert (w["shape"], w["dtype"], w["bytes"], w["value_type"]) == ([2, 3], "float32", 24, "np.ndarray")
    assert w["storage"]["format"] == "zarr3" and w["storage"]["ocdbt"] is True
    b = item["tree"]["layers"][0]["b"]
    assert (b["shape"], b["dtype"], b["bytes"]) == ([6], "int32", 24)
    assert b["sharding"]["sharding_type"] == "NamedSharding"
    assert b["sharding"]["partition_spec"] == ["x"]
    assert item["tree"]["layers"][1]["name"] == {"value_type": "string"}
    assert item["tree"]["empty"] == {}
    assert item["tree"]["step"]["value_type"] == "scalar"
    assert item["tree"]["key"]["random_key_impl"] == "threefry2x32"


def test_describe_composite_of_every_item_kind(tmp_path):
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    checkpointer.save(tmp_path / "step", ocp.args.Composite(
        state=ocp.args.PyTreeSave({"a": np.ones(4, np.float16)}),
        config=ocp.args.JsonSave({"lr": 0.1}),
        single=ocp.args.ArraySave(np.arange(5, dtype=np.int64)),
        key=ocp.args.JaxRandomKeySave(jax.random.key(3)),
        np_key=ocp.args.NumpyRandomKeySave(np.random.default_rng(0).bit_generator.state),
    ))
    items = _described(tmp_path / "step")["items"]
    assert sorted(items) == ["config", "key", "np_key", "single", "state"]
    assert items["state"]["tree"]["a"]["dtype"] == "float16"
    assert items["config"]["kind"] == "files"
    assert items["config"]["handler"].endswith("JsonCheckpointHandler")
    assert list(items["config"]["files"]) == ["metadata"]
    assert items["config"]["files"]["metadata"]["bytes"] == len(
        (tmp_path / "step" / "config" / "metadata").read_bytes())
    single = next(iter(items["single"]["tree"].values()))
    assert (single["shape"], single["dtype"], single["storage"]["format"]) == ([5], "int64", "zarr2")
    key_parts = items["key"]["items"]
    assert key_parts["jax_random_key"]["tree"]["checkpoint"]["shape"] == [2]
    assert list(key_parts["jax_random_key_metadata"]["files"]) == ["metadata"]
    assert any(d["kind"] == "files" for d in items["np_key"]["items"].values())
    one = _described(tmp_path / "step" / "state")
    assert one["items"][""]["handler"].endswith("PyTreeCheckpointHandler")
    assert one["items"][""]["tree"] == items["state"]["tree"]


@pytest.mark.parametrize("case", ["standard_mixed_dtypes", "sharded_named_mesh",
                                  "pytree_no_ocdbt", "array_handler"])
def test_describe_orbax_written_leaves_match_what_orbax_saved(case):
    expected = json.loads((DATA / case / "expected.json").read_text())
    (item,) = _described(DATA / case / "ckpt")["items"].values()
    for dotted, leaf in expected["leaves"].items():
        found = _leaf(item["tree"], dotted) if case != "array_handler" else next(
            iter(item["tree"].values()))
        if "shape" in leaf:
            assert (found["shape"], found["dtype"]) == (leaf["shape"], leaf["dtype"]), dotted
            itemsize = np.dtype(jnp.dtype(leaf["dtype"])).itemsize
            assert found["bytes"] == int(np.prod(leaf["shape"])) * itemsize
    if case == "sharded_named_mesh":
        shardings = [leaf["sharding"] for leaf in jax.tree.leaves(
            item["tree"], is_leaf=lambda n: isinstance(n, dict) and "sharding" in n)]
        assert any(s and s["sharding_type"] == "NamedSharding" and s["shape"] == [4, 2]
                   for s in shardings)


def test_describe_orbax_manager_step_with_json_items():
    step = DATA / "manager_composite_best" / "ckpt" / "ckpt_000030"
    items = _described(step)["items"]
    assert {"state", "config"} <= set(items)
    assert items["state"]["kind"] == "pytree"
    assert items["config"]["kind"] == "files" and items["config"]["files"]


def test_describe_refuses_what_is_not_a_committed_checkpoint(tmp_path):
    with pytest.raises(CorruptCheckpointError, match="Pass a checkpoint folder"):
        ocp.describe(DATA / "manager_composite_best" / "ckpt")
    with pytest.raises(CheckpointNotFoundError, match="missing"):
        ocp.describe(tmp_path / "missing")
    unfinished = tmp_path / "ckpt.orbax-checkpoint-tmp"
    unfinished.mkdir()
    with pytest.raises((UncommittedCheckpointError, CheckpointNotFoundError), match="unfinished save"):
        ocp.describe(unfinished)
