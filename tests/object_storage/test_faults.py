"""Faults on real S3 and GCS servers: restarts and outages mid-save, missing buckets.

Whatever happens to the server, a step is listed and restored only once its commit
marker is written, earlier steps stay restorable, and every failure is an error that
names the URL, raised within a bounded time.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core import args
from jaxpoint.core.errors import (
    BackgroundSaveError,
    CheckpointError,
    CheckpointNotFoundError,
    InvalidArgumentError,
    StorageError,
)
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.storage import COMMIT_MARKER, Location, StorageOptions
from object_storage.support import (
    abstract,
    assert_bit_exact,
    object_names,
    request_retries,
    sharded_tree,
    wait_for_object,
)
from servers.loopback import HOST, free_port
from servers.store import ObjectStore

# 32 MiB over 8 devices, written as 16 MiB OCDBT data files: a save the fault lands in.
BIG_MIB = 32
# The first objects of a step's save: its process's OCDBT database. Waiting for the first
# one leaves the most of the save still to run when the fault lands.
PROCESS_DATABASE = "ocdbt.process_0/"
ASYNC = CheckpointManagerOptions(enable_async_checkpointing=True)


def _restore(manager: CheckpointManager, step: int, **tree_options: int) -> dict:
    return manager.restore(step, args=args.StandardRestore(
        abstract(sharded_tree(step, **tree_options))))


def _is_committed(store: ObjectStore, run: str, step: int) -> bool:
    return COMMIT_MARKER in object_names(store, f"{run}/{step}/")


# One retry per request: a call to a server that is down fails within seconds.
FAIL_FAST = StorageOptions(object_store_max_retries=1)


@pytest.fixture
def fail_fast_bucket(bucket: ObjectStore) -> Iterator[ObjectStore]:
    """A new bucket on the same server, for a test that stops the server."""
    spare = ObjectStore.in_spare_bucket(bucket.server, create=True)
    yield spare
    spare.clear()


def test_restart_mid_save_completes_by_retrying(bucket: ObjectStore):
    """Requests cut off by the restart are retried by TensorStore; the save commits, bit-exact."""
    big = sharded_tree(1, big_mib=BIG_MIB)
    with CheckpointManager(bucket.url("run"), options=ASYNC) as manager:
        manager.save(0, args=args.StandardSave(sharded_tree(0)))
        manager.wait_until_finished()
        manager.save(1, args=args.StandardSave(big))
        wait_for_object(bucket, "run/1/", containing=PROCESS_DATABASE)
        assert not _is_committed(bucket, "run", 1), "the save finished before the restart"
        retried_before = request_retries(bucket)
        bucket.restart()
        manager.wait_until_finished()
        assert manager.all_steps() == [0, 1]
        assert request_retries(bucket) > retried_before, "no request of the save was retried"

    with CheckpointManager(bucket.url("run"), options=ASYNC) as fresh:
        assert fresh.all_steps() == [0, 1]
        assert_bit_exact(_restore(fresh, 1, big_mib=BIG_MIB), big)
        assert_bit_exact(_restore(fresh, 0), sharded_tree(0))


def test_outage_mid_save_fails_on_the_next_call(fail_fast_bucket: ObjectStore):
    """With retries bounded, a server down for longer fails the save; nothing partial shows."""
    run = Location.parse(fail_fast_bucket.url("run"), options=FAIL_FAST)
    big = sharded_tree(1, big_mib=BIG_MIB)
    with CheckpointManager(run, options=ASYNC) as manager:
        manager.save(0, args=args.StandardSave(sharded_tree(0)))
        manager.wait_until_finished()
        manager.save(1, args=args.StandardSave(big))
        wait_for_object(fail_fast_bucket, "run/1/", containing=PROCESS_DATABASE)
        assert not _is_committed(fail_fast_bucket, "run", 1), "the save finished before the outage"
        fail_fast_bucket.server.stop()
        started = time.monotonic()
        try:
            while manager.is_saving_in_progress():  # one retry per request: seconds, not minutes
                assert time.monotonic() - started < 30, "the save kept retrying for 30 s"
                time.sleep(0.05)
        finally:
            fail_fast_bucket.server.start()
        expected = rf"asynchronous save of step 1 under {re.escape(str(run))} failed"
        with pytest.raises(BackgroundSaveError, match=expected):
            manager.save(2, args=args.StandardSave(sharded_tree(2)))
        assert not _is_committed(fail_fast_bucket, "run", 1)
        # The manager re-lists the bucket after a failed save, but that ran while the
        # server was still down; reload() re-reads it now that it is back.
        manager.reload()
        assert manager.all_steps() == [0]
        assert manager.save(1, args=args.StandardSave(sharded_tree(1)))  # no obstacle

    with CheckpointManager(run, options=ASYNC) as fresh:
        assert fresh.all_steps() == [0, 1]
        assert_bit_exact(_restore(fresh, 0), sharded_tree(0))
        assert_bit_exact(_restore(fresh, 1), sharded_tree(1))


def test_missing_bucket_is_a_clear_error(bucket: ObjectStore):
    missing = ObjectStore.in_spare_bucket(bucket.server, create=False)
    gone = r"(NoSuchBucket|No such bucket)"
    started = time.monotonic()

    with pytest.raises(StorageError, match=rf"{re.escape(missing.url('ckpt'))}.*{gone}"):
        ocp.save(missing.url("ckpt"), {"w": np.arange(4)})
    # GCS lists a missing bucket as empty (TensorStore maps the 404 to no objects).
    with pytest.raises((StorageError, CheckpointNotFoundError),
                       match=rf"{re.escape(missing.url('ckpt'))}.*({gone}|found nothing)"):
        ocp.restore(missing.url("ckpt"))
    # S3 fails at the manager's first listing of the bucket, GCS at its first write.
    with pytest.raises(CheckpointError, match=rf"{re.escape(missing.url('run'))}.*{gone}"):
        with CheckpointManager(missing.url("run"), options=ASYNC) as manager:
            manager.save(0, args=args.StandardSave({"w": np.arange(4)}))
            manager.wait_until_finished()
    assert time.monotonic() - started < 10


def test_unreachable_server_fails_within_bounded_time(bucket: ObjectStore,
                                                      monkeypatch: pytest.MonkeyPatch):
    """Nothing listens at the endpoint; one retry per request bounds each call to seconds.

    With TensorStore's defaults (32 retries, backoff doubling from 1 s to 32 s) the same
    call would fail only after about 15 minutes.
    """
    dead = f"http://{HOST}:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", dead)
    unreachable = ObjectStore.in_spare_bucket(bucket.server, create=False)
    refused = r"retry attempts failed.*Could not connect to server"

    def at(path: str) -> Location:
        return Location.parse(unreachable.url(path), options=FAIL_FAST)

    for call in (lambda: ocp.restore(at("ckpt")),
                 lambda: ocp.save(at("ckpt"), {"w": np.arange(4)}),
                 lambda: CheckpointManager(at("run"), options=ASYNC),
                 lambda: ocp.StandardCheckpointer(storage_options=FAIL_FAST).restore(
                     unreachable.url("ckpt"))):
        started = time.monotonic()
        with pytest.raises(StorageError, match=rf"Could not .* {re.escape(unreachable.url())}"
                                               rf".*{refused}.*server is reachable"):
            call()
        assert time.monotonic() - started < 10


def test_retry_setting_is_validated(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JAXPOINT_OBJECT_STORE_MAX_RETRIES", "a few")
    with pytest.raises(InvalidArgumentError,
                       match=r"JAXPOINT_OBJECT_STORE_MAX_RETRIES to be a whole number >= 0, "
                             r"got 'a few'"):
        Location.parse(f"s3://jaxpoint-never-used-{uuid.uuid4().hex[:8]}/ckpt")
