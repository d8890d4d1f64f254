"""Resource faults: full disks, read-only file systems, missing parents, files in the way.

The faults are real: an 8 MiB tmpfs the test mounts (the suite runs as root), a remount
read-only, and an unprivileged child process for "permission denied" (root ignores file
modes). In every case the error says what failed and where, nothing partial is listed,
and what was saved before stays restorable bit-exactly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core.errors import (
    BackgroundSaveError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    StorageError,
)
from jaxpoint.core.inspection import verify
from reliability.conftest import assert_bit_exact, fill_disk, remount_read_only

MIB = 2**20


def _tree(mib: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal(mib * MIB // 4, dtype=np.float32), "step": seed}


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def saved_before(small_disk: Path) -> tuple[Path, dict]:
    """A 1 MiB checkpoint saved while the disk had room."""
    tree = _tree(1, seed=1)
    ocp.save(small_disk / "a", tree)
    return small_disk / "a", tree


def _assert_intact(path: Path, tree: dict) -> None:
    verify(path)
    assert_bit_exact(ocp.restore(path), tree)


def test_disk_full_fails_clearly_and_a_retry_succeeds(small_disk, saved_before):
    filler = fill_disk(small_disk, leave_bytes=2 * MIB)
    new = _tree(4, seed=2)
    with pytest.raises(StorageError, match=r"b\.orbax-checkpoint-tmp-[-0-9a-f]+: the disk is full \(.*No space "
                                           r"left on device.*This process writes 4\.0 MiB of array "
                                           r"data there; [0-9.]+ MiB are free"):
        ocp.save(small_disk / "b", new)
    assert _listing(small_disk) == ["a", "filler"]  # nothing partial, the tmp folder removed
    with pytest.raises(CheckpointNotFoundError, match="found nothing"):
        ocp.restore(small_disk / "b")
    _assert_intact(*saved_before)
    filler.unlink()
    ocp.save(small_disk / "b", new)
    _assert_intact(small_disk / "b", new)
    _assert_intact(*saved_before)


def test_disk_full_during_forced_overwrite_keeps_the_old_checkpoint(small_disk, saved_before):
    fill_disk(small_disk, leave_bytes=2 * MIB)
    with pytest.raises(StorageError, match=r"the disk is full"):
        ocp.save(saved_before[0], _tree(4, seed=3), force=True)
    assert _listing(small_disk) == ["a", "filler"]
    _assert_intact(*saved_before)


def test_disk_full_while_writing_metadata(small_disk):
    fill_disk(small_disk, leave_bytes=1 * MIB)
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
        with pytest.raises(StorageError, match=r"Could not write .*metadata: No space left on "
                                               r"device\. The disk is full"):
            ckptr.save(small_disk / "config", args=ocp.args.JsonSave({"blob": "x" * 3 * MIB}))
    assert _listing(small_disk) == ["filler"]


def test_disk_full_in_the_background_is_raised_by_the_next_call(small_disk, saved_before):
    filler = fill_disk(small_disk, leave_bytes=2 * MIB)
    new = _tree(4, seed=4)
    with ocp.AsyncCheckpointer(ocp.StandardCheckpointHandler()) as ckptr:
        ckptr.save(small_disk / "b", args=ocp.args.StandardSave(new))  # returns once staged
        with pytest.raises(BackgroundSaveError, match=r"save to .*/b failed: StorageError: .*the "
                                                      r"disk is full") as raised:
            ckptr.save(small_disk / "c", args=ocp.args.StandardSave(new))
        assert isinstance(raised.value.__cause__, StorageError)
        assert _listing(small_disk) == ["a", "filler"]
        _assert_intact(*saved_before)
        filler.unlink()
        ckptr.save(small_disk / "b", args=ocp.args.StandardSave(new))
        ckptr.wait_until_finished()
    _assert_intact(small_disk / "b", new)


def test_read_only_file_system(small_disk, saved_before):
    remount_read_only(small_disk)
    match = r"orbax-checkpoint-tmp-[-0-9a-f]+: Read-only file system\. The file system is read-only"
    with pytest.raises(StorageError, match=match):
        ocp.save(small_disk / "b", _tree(1))
    with pytest.raises(StorageError, match=match):
        ocp.save(saved_before[0], _tree(1), force=True)
    with ocp.AsyncCheckpointer(ocp.StandardCheckpointHandler()) as ckptr:
        with pytest.raises(StorageError, match=match):
            ckptr.save(small_disk / "c", args=ocp.args.StandardSave(_tree(1)))
    with pytest.raises(StorageError, match=r"Could not create the folder .*/new/parent: Read-only"):
        ocp.save(small_disk / "new" / "parent" / "ckpt", _tree(1))
    assert _listing(small_disk) == ["a"]
    _assert_intact(*saved_before)  # restoring and verifying never write


@pytest.mark.parametrize("make", [ocp.Checkpointer, ocp.AsyncCheckpointer])
def test_missing_parents_are_created(make, tmp_path):
    path = tmp_path / "runs" / "exp1" / "checkpoints" / "ckpt"
    tree = _tree(0, seed=5)
    with make(ocp.StandardCheckpointHandler()) as ckptr:
        ckptr.save(path, args=ocp.args.StandardSave(tree))
    assert_bit_exact(ocp.restore(path), tree)


def test_a_file_where_a_folder_belongs(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    with pytest.raises(CheckpointExistsError, match=r"Expected a folder path to save into, found a "
                                                    r"file at .*blocker"):
        ocp.save(blocker, _tree(0))
    with pytest.raises(StorageError, match=r"Expected a folder at .*blocker, found a file"):
        ocp.save(blocker / "ckpt", _tree(0))
    with pytest.raises(StorageError, match=r"Not a directory\. A parent of this path is a file"):
        ocp.save(blocker / "sub" / "ckpt", _tree(0))
    with pytest.raises(CheckpointNotFoundError, match=r"Expected a checkpoint folder at .*blocker, "
                                                      r"found a file"):
        ocp.restore(blocker)
    with pytest.raises(CheckpointNotFoundError, match=r"found a file"):
        verify(blocker)
    assert blocker.read_text() == "keep me" and _listing(tmp_path) == ["blocker"]


_UNPRIVILEGED = textwrap.dedent(r"""
    import sys
    import jaxpoint.core as ocp, numpy as np, pytest
    from jaxpoint.core.inspection import verify
    from jaxpoint.core.errors import StorageError
    shared, private, locked = sys.argv[1:4]
    denied = r"Permission denied\. Grant write access or choose another directory"
    with pytest.raises(StorageError, match=rf"Could not create the folder .*ckpt\.orbax-checkpoint-tmp-[-0-9a-f]+: {denied}"):
        ocp.save(f"{shared}/ckpt", {"w": np.ones(3)})
    with ocp.AsyncCheckpointer(ocp.StandardCheckpointHandler()) as ckptr:
        with pytest.raises(StorageError, match=denied):
            ckptr.save(f"{shared}/async", args=ocp.args.StandardSave({"w": np.ones(3)}))
    unreadable = r"Permission denied\. Grant read access \(or run as a user who has it\)"
    with pytest.raises(StorageError, match=rf"Could not look up {private}/ckpt: {unreadable}"):
        ocp.restore(f"{private}/ckpt")
    with pytest.raises(StorageError, match=rf"Could not read {locked}/_CHECKSUMS: {unreadable}"):
        ocp.restore(locked)
    with pytest.raises(StorageError, match=rf"Could not read {locked}/_CHECKSUMS: {unreadable}"):
        verify(locked)
    with pytest.raises(StorageError, match=rf"Could not read {locked}/_METADATA: {unreadable}"):
        ocp.Checkpointer(ocp.StandardCheckpointHandler()).metadata(locked)
    print("unprivileged checks passed")
""")


@pytest.fixture
def root_owned_dirs() -> Iterator[tuple[Path, Path, Path]]:
    """Folders an unprivileged user can see but not write, cannot enter, and cannot read."""
    base = Path(tempfile.mkdtemp(prefix="jaxpoint-perm-"))  # /tmp: reachable by everyone
    try:
        base.chmod(0o755)
        shared, private = base / "shared", base / "private"
        shared.mkdir(mode=0o755)
        private.mkdir(mode=0o700)
        ocp.save(private / "ckpt", {"w": np.ones(3)})
        locked = shared / "locked"
        ocp.save(locked, {"w": np.ones(3)})
        (locked / "_METADATA").chmod(0o600)
        (locked / "_CHECKSUMS").chmod(0o600)
        yield shared, private, locked
    finally:
        shutil.rmtree(base)


def test_permission_denied(root_owned_dirs):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HOME": "/tmp"}
    # setpriv (util-linux), not subprocess's user=: the interpreter lives under /root, which
    # `nobody` may not search, and setpriv drops the privileges only once it is running.
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*nobody, sys.executable, "-c", "import jax, jaxpoint.core"],
                           env=env, cwd="/tmp", capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        # A checkout under a folder only its owner may enter (`mktemp -d` makes 0700 ones)
        # hides the environment from any other user; the check itself then cannot run.
        pytest.skip(f"user nobody cannot import jax and jaxpoint from {sys.prefix} "
                    f"({probe.stderr.strip().splitlines()[-1]}); clone under a folder "
                    "others may enter to run this test")
    result = subprocess.run(
        [*nobody, sys.executable, "-c", _UNPRIVILEGED, *map(str, root_owned_dirs)],
        env=env, cwd="/tmp", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unprivileged checks passed" in result.stdout
