import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core.errors import (
    CheckpointExistsError,
    CheckpointNotFoundError,
    InvalidNameError,
    UncommittedCheckpointError,
    UnregisteredArgsError,
)
from jaxpoint.core.storage import COMMIT_MARKER


def _tree():
    return {"w": jnp.arange(12.0).reshape(3, 4), "b": np.arange(3, dtype=np.int32), "step": 7}


@pytest.mark.parametrize("make", [ocp.PyTreeCheckpointer, ocp.StandardCheckpointer,
                                  lambda: ocp.Checkpointer(ocp.StandardCheckpointHandler())])
def test_save_restore_round_trip(tmp_path, make):
    with make() as ckptr:
        ckptr.save(tmp_path / "ckpt", args=ocp.args.StandardSave(_tree())
                   if isinstance(ckptr.handler, ocp.StandardCheckpointHandler)
                   else ocp.args.PyTreeSave(_tree()))
        ckptr.wait_until_finished()
        restored = ckptr.restore(tmp_path / "ckpt")
    assert np.array_equal(restored["w"], _tree()["w"]) and restored["step"] == 7
    assert isinstance(restored["w"], jax.Array) and isinstance(restored["b"], np.ndarray)


def test_relative_path_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ocp.save("relative/ckpt", _tree())
    assert (tmp_path / "relative" / "ckpt" / COMMIT_MARKER).exists()
    assert ocp.restore("relative/ckpt")["step"] == 7


def test_memory_store_round_trip():
    ocp.save("memory://test-ckptr/ckpt", _tree())
    restored = ocp.restore("memory://test-ckptr/ckpt")
    assert np.array_equal(restored["b"], np.arange(3))


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"Expected a checkpoint at .*nothing"):
        ocp.restore(tmp_path / "nope")


def test_uncommitted_tmp_folder_is_refused(tmp_path):
    ocp.save(tmp_path / "ckpt", _tree())
    tmp = tmp_path / "ckpt.orbax-checkpoint-tmp"
    (tmp_path / "ckpt").rename(tmp)
    with pytest.raises(UncommittedCheckpointError, match="unfinished save"):
        ocp.restore(tmp)
    with pytest.raises(CheckpointNotFoundError, match="never committed"):
        ocp.restore(tmp_path / "ckpt")


def test_object_store_without_marker_is_uncommitted():
    ocp.save("memory://test-marker/ckpt", _tree())
    from jaxpoint.core.storage import Location

    (Location.parse("memory://test-marker/ckpt") / COMMIT_MARKER).remove()
    with pytest.raises(UncommittedCheckpointError, match="no commit marker"):
        ocp.restore("memory://test-marker/ckpt")


def test_existing_path_needs_force(tmp_path):
    ocp.save(tmp_path / "ckpt", _tree())
    with pytest.raises(CheckpointExistsError, match="force=True"):
        ocp.save(tmp_path / "ckpt", {"other": np.ones(2)})
    assert ocp.restore(tmp_path / "ckpt")["step"] == 7  # nothing lost
    ocp.save(tmp_path / "ckpt", {"other": np.ones(2)}, force=True)
    assert list(ocp.restore(tmp_path / "ckpt")) == ["other"]


def test_saving_over_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("precious")
    with pytest.raises(CheckpointExistsError, match="found a file"):
        ocp.save(tmp_path / "file", _tree())
    assert (tmp_path / "file").read_text() == "precious"


def test_args_of_another_handler_are_refused(tmp_path):
    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    with pytest.raises(UnregisteredArgsError, match="registered for JsonCheckpointHandler"):
        ckptr.save(tmp_path / "ckpt", args=ocp.args.JsonSave({"a": 1}))


def test_unregistered_args_are_refused(tmp_path):
    class NotArgs:
        pass

    ckptr = ocp.Checkpointer(ocp.JsonCheckpointHandler())
    with pytest.raises(UnregisteredArgsError, match="Expected a CheckpointArgs"):
        ckptr.save(tmp_path / "ckpt", args=NotArgs())


def test_item_names_that_escape_are_refused(tmp_path):
    with pytest.raises(InvalidNameError, match="would escape"):
        ocp.args.Composite(**{"..": ocp.args.JsonSave({})})
    with pytest.raises(InvalidNameError, match="would escape"):
        ocp.CompositeCheckpointHandler("a/b")
    assert not (tmp_path / "..").joinpath("x").exists()


def test_metadata_from_files(tmp_path):
    ocp.save(tmp_path / "ckpt", _tree())
    meta = ocp.PyTreeCheckpointer().metadata(tmp_path / "ckpt")
    assert meta.item_metadata["w"].shape == (3, 4)
    assert meta.item_metadata["w"].dtype == np.float32
    assert meta.item_handlers.endswith("StandardCheckpointHandler")
    assert meta.commit_timestamp_nsecs >= meta.init_timestamp_nsecs


def test_custom_metadata_is_recorded(tmp_path):
    ckptr = ocp.PyTreeCheckpointer()
    ckptr.save(tmp_path / "ckpt", _tree(), custom_metadata={"run": "abc"})
    assert ckptr.metadata(tmp_path / "ckpt").custom_metadata == {"run": "abc"}


def test_composite_of_items(tmp_path):
    ckptr = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    ckptr.save(tmp_path / "ckpt", args=ocp.args.Composite(
        state=ocp.args.StandardSave(_tree()), config=ocp.args.JsonSave({"lr": 0.1})))
    assert (tmp_path / "ckpt" / "state" / COMMIT_MARKER).exists()
    restored = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(tmp_path / "ckpt")
    assert restored.config == {"lr": 0.1} and restored["state"]["step"] == 7
    only = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
        tmp_path / "ckpt", args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    assert list(only) == ["config"]
    with pytest.raises(CheckpointNotFoundError, match="Expected items \\['nope'\\]"):
        ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
            tmp_path / "ckpt", args=ocp.args.Composite(nope=ocp.args.JsonRestore()))
