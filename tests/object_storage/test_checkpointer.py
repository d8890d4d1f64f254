"""Checkpointers over s3:// and gs:// URLs against real servers: round trips and commits."""

from __future__ import annotations

import re

import jax
import jaxpoint.core as ocp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpoint.core.errors import (
    CheckpointExistsError,
    CheckpointNotFoundError,
    UncommittedCheckpointError,
)
from jaxpoint.core.storage import COMMIT_MARKER, TMP_SUFFIX, Location, commit_protocol_for
from object_storage.support import (
    abstract,
    assert_bit_exact,
    delete_object,
    mesh,
    object_names,
    sharded_tree,
)
from servers.store import ObjectStore

CHECKPOINTERS = {
    "sync": lambda: ocp.Checkpointer(ocp.StandardCheckpointHandler()),
    "async": lambda: ocp.AsyncCheckpointer(ocp.StandardCheckpointHandler()),
}


@pytest.mark.parametrize("kind", CHECKPOINTERS)
def test_sharded_round_trip_is_bit_exact(bucket: ObjectStore, kind: str):
    tree = sharded_tree(seed=1)
    with CHECKPOINTERS[kind]() as checkpointer:
        checkpointer.save(bucket.url("ckpt"), args=ocp.args.StandardSave(tree))
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(bucket.url("ckpt"),
                                        args=ocp.args.StandardRestore(abstract(tree)))

    assert_bit_exact(restored, tree)
    names = object_names(bucket, "ckpt/")
    assert COMMIT_MARKER in names and "manifest.ocdbt" in names and "_METADATA" in names
    assert not any(TMP_SUFFIX in name for name in names), names


def test_restore_as_saved_and_onto_another_sharding(bucket: ObjectStore):
    tree = sharded_tree(seed=2)
    ocp.save(bucket.url("ckpt"), tree)
    resharded = NamedSharding(mesh(), P("model", "data"))
    target = abstract(tree)
    target["params"]["dense"] = jax.ShapeDtypeStruct((64, 32), np.float32, sharding=resharded)

    as_saved = ocp.restore(bucket.url("ckpt"))
    with ocp.StandardCheckpointer() as checkpointer:
        onto = checkpointer.restore(bucket.url("ckpt"), args=ocp.args.StandardRestore(target))

    assert np.asarray(as_saved["params"]["dense"]).tobytes() == \
        np.asarray(tree["params"]["dense"]).tobytes()
    assert as_saved["opt"][0].dtype == np.uint32 and as_saved["step"] == 2
    assert onto["params"]["dense"].sharding == resharded
    assert np.asarray(onto["params"]["dense"]).tobytes() == \
        np.asarray(tree["params"]["dense"]).tobytes()


def test_metadata_is_read_from_the_bucket(bucket: ObjectStore):
    tree = sharded_tree(seed=3)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(bucket.url("ckpt"), args=ocp.args.StandardSave(tree),
                          custom_metadata={"run": "object-storage"})
        checkpointer.wait_until_finished()
        metadata = checkpointer.metadata(bucket.url("ckpt"))

    dense = metadata.item_metadata["params"]["dense"]
    assert (dense.shape, dense.dtype, dense.write_shape) == ((64, 32), np.float32, (16, 16))
    assert dense.sharding_description["partition_spec"] == ["data", "model"]
    embed = metadata.item_metadata["params"]["embed"]
    assert (embed.shape, embed.dtype) == ((16, 8), jax.numpy.bfloat16)
    assert metadata.item_metadata["host"].value_type == "np.ndarray"
    assert metadata.custom_metadata == {"run": "object-storage"}
    assert metadata.init_timestamp_nsecs <= metadata.commit_timestamp_nsecs


def test_existing_checkpoint_needs_force(bucket: ObjectStore):
    first, second = sharded_tree(seed=4), sharded_tree(seed=5)
    ocp.save(bucket.url("ckpt"), first)

    with pytest.raises(CheckpointExistsError, match=rf"already exists at {re.escape(bucket.url('ckpt'))}"):
        ocp.save(bucket.url("ckpt"), second)
    assert ocp.restore(bucket.url("ckpt"))["step"] == 4  # nothing lost

    ocp.save(bucket.url("ckpt"), second, force=True)
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(bucket.url("ckpt"),
                                        args=ocp.args.StandardRestore(abstract(second)))
    assert_bit_exact(restored, second)


def test_missing_checkpoint_names_the_url(bucket: ObjectStore):
    with pytest.raises(CheckpointNotFoundError,
                       match=rf"Expected a checkpoint at {re.escape(bucket.url('nothing'))}, found nothing"):
        ocp.restore(bucket.url("nothing"))


def test_folder_without_marker_is_never_restored_nor_blocks_a_save(bucket: ObjectStore):
    old, new = sharded_tree(seed=6), sharded_tree(seed=7)
    ocp.save(bucket.url("ckpt"), old)
    old_names = set(object_names(bucket, "ckpt/"))
    # What a save killed before its commit leaves: every file but the marker.
    delete_object(bucket, f"ckpt/{COMMIT_MARKER}")

    with pytest.raises(UncommittedCheckpointError, match=r"no commit marker.*never finished"):
        ocp.restore(bucket.url("ckpt"))
    with ocp.StandardCheckpointer() as checkpointer:
        with pytest.raises(UncommittedCheckpointError, match=rf"{re.escape(bucket.url('ckpt'))} has no"):
            checkpointer.metadata(bucket.url("ckpt"))
        checkpointer.save(bucket.url("ckpt"), args=ocp.args.StandardSave(new))  # no force
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(bucket.url("ckpt"),
                                        args=ocp.args.StandardRestore(abstract(new)))

    assert_bit_exact(restored, new)
    stale = {name for name in old_names & set(object_names(bucket, "ckpt/")) if "/d/" in name}
    assert not stale, f"data files of the uncommitted save survived: {sorted(stale)}"



def test_the_commit_marker_is_written_only_where_there_is_none(bucket: ObjectStore):
    # Two writers of one step on a bucket: the marker is a conditional write
    # (S3 If-None-Match, GCS ifGenerationMatch=0), so only the first commits.
    final = Location.parse(bucket.url("run/5"))
    protocol = commit_protocol_for(final)
    work = protocol.begin(final)
    (work / "data").write_text("first")
    protocol.commit(work, final)
    marker = (final / COMMIT_MARKER).read_bytes()
    with pytest.raises(CheckpointExistsError, match=(
            rf"Expected no checkpoint at {re.escape(str(final))} when committing, found its "
            r"commit_success.txt: another writer committed it first")):
        protocol.commit(work, final)
    assert (final / COMMIT_MARKER).read_bytes() == marker
    protocol.uncommit(final)
    protocol.uncommit(final)  # a second deleter: success
    assert not final.exists()
