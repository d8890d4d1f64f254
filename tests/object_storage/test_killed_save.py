"""A save killed by SIGKILL mid-write leaves a step that is never listed nor restored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import jaxpoint.core as ocp
import pytest
from jaxpoint.core import args
from jaxpoint.core.errors import StepNotFoundError, UncommittedCheckpointError
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.storage import COMMIT_MARKER
from object_storage.support import abstract, assert_bit_exact, object_names, sharded_tree
from servers.store import ObjectStore

_TESTS_DIR = Path(__file__).resolve().parents[1]


def _run_killed_save(url: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_TESTS_DIR), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "object_storage.killed_save", url], env=env,
                          capture_output=True, text=True, timeout=120)


def test_killed_save_is_never_listed_and_is_cleaned_up(bucket: ObjectStore):
    child = _run_killed_save(bucket.url("run"))
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    leftover = object_names(bucket, "run/1/")
    assert any("ocdbt.process_0/d/" in name for name in leftover), leftover
    assert not any(name.endswith(COMMIT_MARKER) for name in leftover), leftover

    with CheckpointManager(bucket.url("run")) as manager:
        assert (manager.all_steps(), manager.latest_step()) == ([0], 0)
        with pytest.raises(StepNotFoundError, match=r"Expected step 1 .*found only steps \[0\]"):
            manager.restore(1)
    with pytest.raises(UncommittedCheckpointError, match=r"run/1 has no commit marker"):
        ocp.restore(bucket.url("run/1"))

    options = CheckpointManagerOptions(enable_async_checkpointing=True,
                                       cleanup_tmp_directories=True)
    replacement = sharded_tree(101)
    with CheckpointManager(bucket.url("run"), options=options) as manager:
        assert (manager.all_steps(), manager.latest_step()) == ([0], 0)
        assert object_names(bucket, "run/1/") == []  # removed by cleanup_tmp_directories
        assert_bit_exact(manager.restore(0, args=args.StandardRestore(abstract(sharded_tree(0)))),
                         sharded_tree(0))
        assert manager.save(1, args=args.StandardSave(replacement))
        manager.wait_until_finished()
        restored = manager.restore(1, args=args.StandardRestore(abstract(replacement)))

    assert_bit_exact(restored, replacement)
