"""Per-leaf args built by orbax-checkpoint (as Flax's orbax_utils builds them) are taken as
jaxpoint's, field by field; what jaxpoint cannot honour raises."""

from __future__ import annotations

import jax
import jaxpoint.core as ocp
import numpy as np
import orbax.checkpoint as orbax_ocp
import pytest
from jaxpoint.core.errors import InvalidArgumentError


def test_orbax_args_objects_reach_the_save_and_the_restore(tmp_path):
    tree = {"w": np.arange(6.0).reshape(2, 3), "empty": {}}
    ocp.PyTreeCheckpointer().save(tmp_path / "c", args=ocp.args.PyTreeSave(tree, save_args={
        "w": orbax_ocp.SaveArgs(dtype=np.float16), "empty": {}}))
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(
        tree, restore_args={"w": orbax_ocp.RestoreArgs(restore_type=np.ndarray,
                                                       dtype=np.float32), "empty": {}}))
    assert restored["w"].dtype == np.float32 and restored["w"].tolist() == tree["w"].tolist()
    saved = ocp.PyTreeCheckpointer().metadata(tmp_path / "c").item_metadata["w"]
    assert saved.dtype == np.float16  # the Orbax SaveArgs' dtype was used
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[1])
    as_array = ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(
        {"w": tree["w"]}, restore_args={"w": orbax_ocp.ArrayRestoreArgs(sharding=sharding)},
        partial_restore=True))
    assert as_array["w"].sharding == sharding


@pytest.mark.parametrize(("save_args", "match"), [
    ({"w": orbax_ocp.SaveArgs(shard_axes=(0,))},
     r"Expected SaveArgs\(shard_axes=\(\)\) at save_args for \['w'\], got \(0,\)"),
    ({"w": "bf16"}, r"Expected SaveArgs or None in save_args at \['w'\], got str"),
])
def test_save_args_jaxpoint_cannot_honour_raise(tmp_path, save_args, match):
    with pytest.raises(InvalidArgumentError, match=match):
        ocp.PyTreeCheckpointer().save(tmp_path / "c", args=ocp.args.PyTreeSave(
            {"w": np.ones(2)}, save_args=save_args))
    assert not (tmp_path / "c").exists()


def test_an_orbax_args_class_jaxpoint_does_not_take_over_raises(tmp_path):
    ocp.PyTreeCheckpointer().save(tmp_path / "c", args=ocp.args.PyTreeSave({"w": np.ones(2)}))
    foreign = orbax_ocp.type_handlers.SingleReplicaArrayRestoreArgs()
    with pytest.raises(InvalidArgumentError, match=r"got orbax.checkpoint's "
                       r"SingleReplicaArrayRestoreArgs.*ocp.type_handlers"):
        ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(
            {"w": np.ones(2)}, restore_args={"w": foreign}))
