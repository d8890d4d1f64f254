"""LocalTier in one process (8 virtual devices): saves, the step record, retention, errors.

Recovery across processes (lost folders, broadcasts, crashes) is in
test_recovery_processes.py; here one process holds every replica, so every restore reads
its own folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpoint.core.emergency import LocalTier
from jaxpoint.core.errors import (
    BackgroundSaveError,
    InvalidArgumentError,
    ProcessFailureError,
    StepAlreadyExistsError,
    StepNotFoundError,
    StorageError,
)
from jaxpoint.core.inspection import verify
from jaxpoint.core.inspection.step_names import standard_name_format
from jaxpoint.core.storage.commit import new_tmp_name


@pytest.fixture(scope="module")
def mesh() -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("replica", "model"))


def _state(mesh: jax.sharding.Mesh, step: int) -> dict[str, Any]:
    weights = np.arange(64, dtype=np.float32).reshape(4, 16) + step
    weights[0, :2] = [-0.0, np.nan]
    return {
        "weights": jax.device_put(weights, NamedSharding(mesh, P(None, "model"))),
        "nested": {"bias": jax.device_put(np.arange(8, dtype=jnp.bfloat16) * step,
                                          NamedSharding(mesh, P("model")))},
        "key": jax.device_put(jax.random.key(step, impl="rbg"), NamedSharding(mesh, P())),
    }


def _abstract(state: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        state)


def _bits(state: Any) -> list[bytes]:
    leaves = [jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
              else a for a in jax.tree.leaves(state)]
    return [np.asarray(a).tobytes() for a in leaves]


@pytest.mark.parametrize("is_async", [True, False], ids=["async", "sync"])
def test_round_trip_is_bit_exact_with_items(tmp_path: Path, mesh: jax.sharding.Mesh,
                                            is_async: bool) -> None:
    with LocalTier(tmp_path, global_mesh=mesh, enable_async_checkpointing=is_async) as tier:
        for step in (1, 2):
            tier.save(step, _state(mesh, step), items={"data": {"position": step}})
        tier.wait_until_finished()
        assert tier.local_steps() == [1, 2]
        assert tier.agree_on_restorable_step() == 2
        restored, items = tier.restore(1, _abstract(_state(mesh, 0)))
    assert items == {"data": {"position": 1}}
    assert _bits(restored) == _bits(_state(mesh, 1))
    assert restored["weights"].sharding == _state(mesh, 1)["weights"].sharding
    assert jax.random.key_impl(restored["key"]) == jax.random.key_impl(_state(mesh, 1)["key"])


def test_a_local_step_is_an_ordinary_checkpoint_with_its_record(tmp_path: Path,
                                                                mesh: jax.sharding.Mesh) -> None:
    with LocalTier(tmp_path, global_mesh=mesh, step_name_format=standard_name_format(
            step_prefix="local")) as tier:
        tier.save(7, _state(mesh, 7))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local_7"]
    assert verify(tmp_path / "local_7").arrays == 3
    record = json.loads((tmp_path / "local_7" / "_CHECKPOINT_METADATA").read_text())[
        "custom_metadata"]["jaxpoint_local_tier"]
    assert record["step"] == 7 and record["process_index"] == 0
    assert record["layout"]["shape"] == [2, 4] and record["layout"]["axis_names"] == ["replica", "model"]
    assert record["positions"] == [[r, s] for r in range(2) for s in range(4)]
    assert record["leaves"] == [["['key']", [], "key<rbg>"], ["['nested']['bias']", [8], "bfloat16"],
                                ["['weights']", [4, 16], "float32"]]


def test_max_to_keep_and_delete(tmp_path: Path, mesh: jax.sharding.Mesh) -> None:
    tier = LocalTier(tmp_path, global_mesh=mesh, max_to_keep=2)
    for step in range(5):
        tier.save(step, _state(mesh, step))
    tier.wait_until_finished()
    assert tier.local_steps() == [3, 4]
    tier.delete(4)
    tier.delete(4)  # already gone: fine
    assert tier.local_steps() == [3]
    assert tier.agree_on_restorable_step() == 3
    tier.close()


def test_saving_a_committed_step_again_raises(tmp_path: Path, mesh: jax.sharding.Mesh) -> None:
    with LocalTier(tmp_path, global_mesh=mesh) as tier:
        tier.save(3, _state(mesh, 3))
        with pytest.raises(StepAlreadyExistsError, match=r"Expected no local step 3 in .*, found "
                           r"one saved by this LocalTier\. To fix, save a new step or delete"):
            tier.save(3, _state(mesh, 3))


def test_no_step_and_a_missing_step(tmp_path: Path, mesh: jax.sharding.Mesh,
                                    caplog: pytest.LogCaptureFixture) -> None:
    tier = LocalTier(tmp_path / "never-written", global_mesh=mesh)
    with caplog.at_level(logging.WARNING, logger="jaxpoint.core.emergency"):
        assert tier.agree_on_restorable_step() is None
    assert "no restorable local step: no process holds any local step" in caplog.text
    with pytest.raises(StepNotFoundError, match=r"Expected local step 5 on some replica of every "
                       r"slot, but it is held by processes \[\] only \(slots \[0, 1, 2, 3\] "):
        tier.restore(5, _abstract(_state(mesh, 0)))


def test_one_replica_warns_at_construction(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    single = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4), ("replica", "model"))
    with caplog.at_level(logging.WARNING, logger="jaxpoint.core.emergency"):
        LocalTier(tmp_path, global_mesh=single)
    assert [r.getMessage() for r in caplog.records] == [
        "LocalTier: the mesh {'replica': 1, 'model': 4} has 1 replica along axis 'replica', so a "
        "process that loses its local folder cannot be recovered from the local tier (use a "
        "persistent tier)."]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"global_mesh": "mesh"}, r"Expected global_mesh to be a jax.sharding.Mesh, got str"),
    ({"replica_axis_index": 2}, r"Expected replica_axis_index in \[0, 2\) for the mesh"),
    ({"max_to_keep": 0}, r"Expected LocalTier max_to_keep to be an int >= 1 or None, got 0"),
    ({"broadcast_memory_limit_bytes": 0}, r"Expected broadcast_memory_limit_bytes to be an int"),
    ({"timeout_s": 0}, r"Expected timeout_s > 0 seconds for LocalTier, got 0"),
    ({"enable_async_checkpointing": "yes"}, r"Expected enable_async_checkpointing to be a bool"),
    ({"enable_async_checkpointing": False, "async_options": object()},
     r"Expected async_options only with enable_async_checkpointing=True"),
])
def test_bad_construction_raises(tmp_path: Path, mesh: jax.sharding.Mesh,
                                 kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        LocalTier(tmp_path, **{"global_mesh": mesh, **kwargs})


def test_bad_saves_and_targets_raise(tmp_path: Path, mesh: jax.sharding.Mesh) -> None:
    other = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("replica", "model"))
    with LocalTier(tmp_path, global_mesh=mesh) as tier:
        with pytest.raises(InvalidArgumentError, match=r"Expected step to be an int >= 0, got -1"):
            tier.save(-1, _state(mesh, 1))
        with pytest.raises(InvalidArgumentError, match=r"Expected items to be a mapping of str"):
            tier.save(1, _state(mesh, 1), items=[1, 2])  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match=r"Expected a JSON-serialisable value for "
                           r"item 'rows', got ndarray .*To fix, convert it"):
            tier.save(1, _state(mesh, 1), items={"rows": np.ones(2)})
        with pytest.raises(InvalidArgumentError, match=r"at tree path \['weights'\] of local step 1, "
                           r"got ndarray"):
            tier.save(1, {"weights": np.ones(3)})
        with pytest.raises(InvalidArgumentError, match=r"NamedSharding over the tier's global_mesh "
                           r"at tree path \['w'\] of local step 1"):
            tier.save(1, {"w": jax.device_put(np.ones(4), NamedSharding(other, P()))})
        with pytest.raises(InvalidArgumentError, match=r"replicated along the replica axis "
                           r"'replica', but its spec P\('replica',\) shards it"):
            tier.save(1, {"w": jax.device_put(np.ones(4), NamedSharding(mesh, P("replica")))})
        assert tier.local_steps() == []
        tier.save(1, _state(mesh, 1))
        # Raised on every process (here one): a process alone must not leave the others waiting.
        with pytest.raises(ProcessFailureError, match=r"checking abstract_state and looking up "
                           r"local step 1 in .* on process 0 failed: InvalidArgumentError: "
                           r".*at tree path \['weights'\] of abstract_state, got "
                           r"ShapeDtypeStruct with sharding None"):
            tier.restore(1, {"weights": jax.ShapeDtypeStruct((4, 16), jnp.float32)})


@contextlib.contextmanager
def _file_size_limit(limit_bytes: int) -> Iterator[None]:
    """Files this process writes may not grow past `limit_bytes` (writes fail with EFBIG, as
    on a full disk; Python ignores SIGXFSZ). Only background writes of big files hit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _big_state(mesh: jax.sharding.Mesh, step: int) -> dict[str, Any]:
    noise = np.random.default_rng(step).integers(0, 2**32, (64, 1024), dtype=np.uint32)
    return {"noise": jax.device_put(noise, NamedSharding(mesh, P(None, "model")))}


@pytest.mark.parametrize("surfaces_in", ["wait_until_finished", "check_for_errors",
                                         "agree_on_restorable_step"])
def test_a_failed_background_save_raises_once_and_lists_no_step(
        tmp_path: Path, mesh: jax.sharding.Mesh, surfaces_in: str) -> None:
    tier = LocalTier(tmp_path, global_mesh=mesh)
    tier.save(1, _big_state(mesh, 1))
    tier.wait_until_finished()
    with _file_size_limit(16 * 1024):  # each process's shards: 256 KiB of random bits
        tier.save(2, _big_state(mesh, 2))  # returns once staged: the write fails behind
        # In the agreement it raises on every process (here one), naming this process.
        raised = ProcessFailureError if surfaces_in == "agree_on_restorable_step" else (
            BackgroundSaveError)
        with pytest.raises(raised, match=r"The asynchronous save to .*2 failed: "
                           r".*File too large"):
            if surfaces_in == "agree_on_restorable_step":
                tier.agree_on_restorable_step()
            elif surfaces_in == "wait_until_finished":
                tier.wait_until_finished()
            else:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    tier.check_for_errors()  # raises once the write has failed
                    time.sleep(0.01)
    tier.check_for_errors()  # raised once only
    tier.wait_until_finished()
    assert tier.local_steps() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # the work folder went too
    tier.save(2, _big_state(mesh, 2))
    tier.close()
    assert tier.local_steps() == [1, 2]


def test_a_directory_that_cannot_be_a_folder_raises_clearly(tmp_path: Path,
                                                            mesh: jax.sharding.Mesh) -> None:
    (tmp_path / "file").write_text("not a folder")
    for directory in (tmp_path / "file", tmp_path / "file" / "p0"):
        with pytest.raises(InvalidArgumentError, match=r"Expected a local directory LocalTier "
                           r"can create and write at .*file.* on process 0, but .*To fix, pass "
                           r"a folder on this host's disk or RAM disk"):
            LocalTier(directory, global_mesh=mesh)
    # A step name the folder takes, whose work folder name (longer) it refuses.
    long_names = LocalTier(tmp_path / "long", global_mesh=mesh, step_name_format=(
        standard_name_format(step_prefix="s" * 200)))
    with pytest.raises(StorageError, match=r"Expected to start local step 1 in .*long on "
                       r"process 0, but the folder refused it: .*name too long.*To fix, make "
                       r"the directory writable"):
        long_names.save(1, _state(mesh, 1))
    tier = LocalTier(tmp_path / "missing" / "p0", global_mesh=mesh)  # created, with parents
    assert (tmp_path / "missing" / "p0").is_dir()
    # The folder is replaced by a file behind the tier's back: every call says so.
    (tmp_path / "missing" / "p0").rmdir()
    (tmp_path / "missing" / "p0").write_text("")
    with pytest.raises(StorageError, match=r"Expected the local directory .*p0 to be a folder, "
                       r"found a file\. To fix, remove the file"):
        tier.save(1, _state(mesh, 1))
    with pytest.raises(ProcessFailureError, match=r"listing the local steps in .*p0 on process 0 "
                       r"failed: StorageError: .*Recovery needs every process: make that folder a readable directory"):
        tier.agree_on_restorable_step()
    with pytest.raises(ProcessFailureError, match=r"looking up local step 1 in .*p0 on process "
                       r"0 failed: StorageError: Expected the local directory"):
        tier.restore(1, _abstract(_state(mesh, 0)))


def test_a_save_replaces_the_steps_an_earlier_run_left_at_or_after_it(
        tmp_path: Path, mesh: jax.sharding.Mesh, caplog: pytest.LogCaptureFixture) -> None:
    with LocalTier(tmp_path, global_mesh=mesh, enable_async_checkpointing=False) as earlier:
        for step in (3, 4, 5):
            earlier.save(step, _state(mesh, step))
    # A restart resumed from step 2 (say, of the persistent tier): 3-5 are an abandoned future.
    tier = LocalTier(tmp_path, global_mesh=mesh, max_to_keep=2)
    with caplog.at_level(logging.WARNING, logger="jaxpoint.core.emergency"):
        tier.save(4, _state(mesh, 40))
    assert [r.getMessage() for r in caplog.records] == [
        f"LocalTier: saving step 4 in {tmp_path} deletes the local steps [4, 5] an earlier run "
        "left (this run did not resume from them)."]
    tier.save(5, _state(mesh, 50))
    tier.wait_until_finished()
    # max_to_keep keeps this run's newest steps, not the earlier run's.
    assert tier.local_steps() == [4, 5]
    restored, _ = tier.restore(5, _abstract(_state(mesh, 0)))
    assert _bits(restored) == _bits(_state(mesh, 50))
    tier.close()


def test_work_folders_of_dead_processes_and_other_hosts_go_at_construction(
        tmp_path: Path, mesh: jax.sharding.Mesh) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    mine = new_tmp_name("7")  # this live process's, on this host: a writer in flight
    left = {
        "dead": new_tmp_name("1").replace(f"-{os.getpid()}-", f"-{int(dead.stdout)}-"),
        "other_host": re.sub(r"-(\d+)-([0-9a-f]{8})-", r"-\1-00000000-", new_tmp_name("2")),
        "live": mine,
    }
    for name in left.values():
        (tmp_path / name).mkdir()
    LocalTier(tmp_path, global_mesh=mesh)
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine]
