"""StorageOptions: every knob is set per location or per checkpointer and changes what
is read or written; bad values fail with the field's name and the fix."""

import logging
import os
import pathlib
import re

import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.storage import Location, StorageOptions
from jaxpoint.core.storage.context import write_context
from jaxpoint.core.storage.posix_backend import PosixBackend

RETRIES_ENV = "JAXPOINT_OBJECT_STORE_MAX_RETRIES"
KIB = 1024
# Four arrays of 512 KiB: above the small-array path, so each is one TensorStore write.
TREE = {f"a{i}": np.random.default_rng(i).random(64 * KIB) for i in range(4)}


def _peaks_in_flight(caplog: pytest.LogCaptureFixture, verb: str) -> list[int]:
    return [int(m.group(1)) for r in caplog.records
            if r.name == "jaxpoint.core.storage.array_io" and r.getMessage().startswith(verb)
            for m in [re.search(r"at most (\d+) bytes in flight", r.getMessage())] if m]


def _save_and_restore(path: pathlib.Path, options: StorageOptions | None) -> None:
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(), storage_options=options)
    checkpointer.save(path, args=ocp.args.PyTreeSave(TREE))
    restored = checkpointer.restore(path)
    assert all(np.array_equal(restored[k], v) for k, v in TREE.items())


def test_object_store_max_retries_sets_the_request_retries(monkeypatch):
    monkeypatch.delenv(RETRIES_ENV, raising=False)
    for scheme, resource in (("s3", "s3_request_retries"), ("gs", "gcs_request_retries")):
        url = f"{scheme}://jaxpoint-options-test/ckpt"
        bounded = Location.parse(url, options=StorageOptions(object_store_max_retries=2))
        assert bounded.kvstore_spec()[resource] == {"max_retries": 2}
        # Not frozen by the first use of the bucket: another setting, another spec.
        assert resource not in Location.parse(url).kvstore_spec()
        assert (bounded / "step").kvstore_spec()[resource] == {"max_retries": 2}


def test_retries_environment_variable_is_only_a_default(monkeypatch):
    monkeypatch.setenv(RETRIES_ENV, "3")
    assert StorageOptions().object_store_max_retries == 3
    assert StorageOptions(object_store_max_retries=0).object_store_max_retries == 0
    monkeypatch.delenv(RETRIES_ENV)
    assert StorageOptions().object_store_max_retries is None


def test_fsync_false_skips_flushing(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:  # the real call, counted
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    for fsync in (True, False):
        synced.clear()
        folder = Location.parse(tmp_path / str(fsync), options=StorageOptions(fsync=fsync))
        assert isinstance(folder.backend, PosixBackend) and folder.backend.fsync is fsync
        folder.make_folder()
        (folder / "file").write_bytes(b"x")
        (folder / "other").write_bytes_if_absent(b"y")
        (folder / "file").rename_to(folder / "renamed")
        assert (folder / "renamed").read_bytes() == b"x"
        assert bool(synced) is fsync
        # TensorStore's own files (array data, OCDBT manifests) follow the same setting.
        assert write_context(fsync=fsync)["file_io_sync"].to_json() is fsync
    _save_and_restore(tmp_path / "unsynced", StorageOptions(fsync=False))


def _data_files(item: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in item.rglob("*") if p.is_file() and p.parent.name == "d"]


def test_target_data_file_size_rolls_data_files(tmp_path):
    _save_and_restore(tmp_path / "default", None)
    _save_and_restore(tmp_path / "small", StorageOptions(target_data_file_size=256 * KIB))
    assert len(_data_files(tmp_path / "small")) > len(_data_files(tmp_path / "default"))
    # The save's own PyTreeSave.ocdbt_target_data_file_size wins over the location's.
    location = Location.parse(tmp_path / "args", options=StorageOptions(target_data_file_size=256 * KIB))
    ocp.PyTreeCheckpointer().save(location, args=ocp.args.PyTreeSave(
        TREE, ocdbt_target_data_file_size=1024**3))
    assert len(_data_files(tmp_path / "args")) < len(_data_files(tmp_path / "small"))
    # A manager given such a Location writes every step with its options.
    run = Location.parse(tmp_path / "run", options=StorageOptions(target_data_file_size=256 * KIB))
    with ocp.CheckpointManager(run) as manager:
        manager.save(0, args=ocp.args.StandardSave(TREE))
    assert len(_data_files(tmp_path / "run" / "0")) > len(_data_files(tmp_path / "default"))


def test_in_flight_bounds_limit_bytes_in_flight(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="jaxpoint.core.storage.array_io")
    total = sum(a.nbytes for a in TREE.values())
    _save_and_restore(tmp_path / "default", None)
    assert _peaks_in_flight(caplog, "Wrote") == [total]  # uncompressed writes: unbounded
    assert _peaks_in_flight(caplog, "Read") == [total]  # under the 256 MiB default
    caplog.clear()
    one = 512 * KIB
    _save_and_restore(tmp_path / "one", StorageOptions(
        write_bytes_in_flight=one, read_bytes_in_flight=one, min_requests_in_flight=1))
    assert _peaks_in_flight(caplog, "Wrote") == [one]
    assert _peaks_in_flight(caplog, "Read") == [one]
    caplog.clear()
    # Two requests stay in flight whatever the byte bound says.
    _save_and_restore(tmp_path / "two", StorageOptions(
        write_bytes_in_flight=one, read_bytes_in_flight=one, min_requests_in_flight=2))
    assert _peaks_in_flight(caplog, "Wrote") == [2 * one]
    assert _peaks_in_flight(caplog, "Read") == [2 * one]


def test_options_travel_with_the_location(tmp_path):
    options = StorageOptions(target_data_file_size=4096, fsync=False)
    root = Location.parse(tmp_path, options=options)
    assert (root / "a" / "b").options is options and (root / "a").parent.options is options
    assert Location.parse(root) is root
    assert Location.parse(root, options=StorageOptions()).options == StorageOptions()
    assert Location.parse(root, options=StorageOptions()) == root  # the same path


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("object_store_max_retries", -1, "an int >= 0 or None"),
    ("object_store_max_retries", True, "an int >= 0 or None"),
    ("fsync", 1, "True or False"),
    ("target_data_file_size", 0, "an int >= 1 or None"),
    ("write_bytes_in_flight", 1.5, "an int >= 1 or None"),
    ("read_bytes_in_flight", -4, "an int >= 1 or None"),
    ("min_requests_in_flight", 0, "an int >= 1 or None"),
])
def test_bad_values_are_rejected(field, value, expected):
    with pytest.raises(InvalidArgumentError,
                       match=rf"Expected StorageOptions.{field} to be {re.escape(expected)}, got"):
        StorageOptions(**{field: value})


def test_bad_environment_value_is_rejected(monkeypatch):
    monkeypatch.setenv(RETRIES_ENV, "a few")
    with pytest.raises(InvalidArgumentError, match=f"Expected {RETRIES_ENV} to be a whole number"):
        StorageOptions()
    assert StorageOptions(object_store_max_retries=1).object_store_max_retries == 1


def test_options_must_be_storage_options(tmp_path):
    with pytest.raises(InvalidArgumentError, match="Expected storage_options to be a StorageOptions"):
        ocp.StandardCheckpointer(storage_options={"fsync": False})
    with pytest.raises(InvalidArgumentError, match="Expected options to be a StorageOptions"):
        Location.parse(tmp_path, options={"fsync": False})
