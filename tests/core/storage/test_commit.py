import os
import subprocess
import sys

import pytest
from jaxpoint.core.errors import CheckpointExistsError
from jaxpoint.core.storage import (
    COMMIT_MARKER,
    Location,
    commit_protocol_for,
    is_tmp_name,
    parse_tmp_name,
)
from jaxpoint.core.storage.commit import DELETING, REPLACED, SAVING, new_tmp_name
from orbax.checkpoint import utils as orbax_utils
from orbax.checkpoint._src.path import step as orbax_step


def test_rename_commit_is_invisible_until_commit(tmp_path):
    final = Location.parse(tmp_path / "step")
    protocol = commit_protocol_for(final)
    work = protocol.begin(final)
    assert is_tmp_name(work.name)
    (work / "data").write_text("x")
    assert not protocol.is_committed(final)
    protocol.commit(work, final)
    assert protocol.is_committed(final)
    assert (final / COMMIT_MARKER).exists() and not work.exists()


def test_rename_commit_replaces_an_existing_checkpoint_only_when_asked(tmp_path):
    final = Location.parse(tmp_path / "step")
    protocol = commit_protocol_for(final)
    for value in ("old", "new"):
        work = protocol.begin(final)
        (work / "data").write_text(value)
        protocol.commit(work, final, replace=True)
    assert (final / "data").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step"]


def test_second_commit_of_one_step_loses_and_leaves_the_winner_intact(tmp_path):
    final = Location.parse(tmp_path / "step")
    protocol = commit_protocol_for(final)
    first, second = protocol.begin(final), protocol.begin(final)
    assert first != second  # two attempts never share a work folder
    (first / "data").write_text("first")
    (second / "data").write_text("second")
    protocol.commit(first, final)
    with pytest.raises(CheckpointExistsError, match=r"Expected no checkpoint at .*step when "
                       r"committing, found a folder: another writer committed it first"):
        protocol.commit(second, final)
    assert (final / "data").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step"]  # the loser's work is gone


def test_commit_never_replaces_a_committed_folder_without_renameat2(tmp_path):
    # rename(2), the fallback where RENAME_NOREPLACE is missing, refuses a non-empty target.
    final = Location.parse(tmp_path / "step")
    protocol = commit_protocol_for(final)
    protocol.commit(protocol.begin(final), final)
    work = protocol.begin(final)
    (work / "data").write_text("x")
    with pytest.raises(OSError):
        os.rename(work.path, final.path)
    assert not (final / "data").exists()


def test_stale_tmp_folder_does_not_block_a_new_save(tmp_path):
    final = Location.parse(tmp_path / "step")
    protocol = commit_protocol_for(final)
    stale = protocol.begin(final)
    (stale / "leftover").write_text("killed mid-save")
    work = protocol.begin(final)
    assert work.list_names() == []
    protocol.commit(work, final)
    assert (stale / "leftover").exists()  # left for cleanup; never listed


@pytest.mark.parametrize("name, base, kind", [
    ("5.orbax-checkpoint-tmp", "5", SAVING),
    ("5.orbax-checkpoint-tmp-1712", "5", SAVING),  # Orbax's timestamped form
    ("ckpt_5.orbax-checkpoint-tmp-1733400000000000000-4242-0a1b2c3d-99aa00ff", "ckpt_5", SAVING),
    ("5.orbax-checkpoint-tmp-deleting", "5", DELETING),
    ("5.orbax-checkpoint-tmp-1733400000000000000-4242-0a1b2c3d-99aa00ff-deleting", "5", DELETING),
    ("5.orbax-checkpoint-tmp-replaced", "5", REPLACED),
])
def test_parse_tmp_name_recognises_the_names_created(name, base, kind):
    parsed = parse_tmp_name(name)
    assert parsed is not None and (parsed.base, parsed.kind) == (base, kind)


@pytest.mark.parametrize("name", [
    "5.orbax-checkpoint-tmp.mybackup", "5.orbax-checkpoint-tmp-", "5.orbax-checkpoint-tmp-x",
    "5.orbax-checkpoint-tmp-12-deleting-old", ".orbax-checkpoint-tmp",
    "5.orbax-checkpoint-tmp.orbax-checkpoint-tmp", "5", "orbax-checkpoint-tmp",
])
def test_parse_tmp_name_refuses_names_that_only_contain_the_suffix(name):
    assert parse_tmp_name(name) is None and not is_tmp_name(name)


def test_new_tmp_names_round_trip_and_are_unique():
    names = {new_tmp_name("7", kind) for kind in (SAVING, DELETING, REPLACED) for _ in range(50)}
    assert len(names) == 150
    assert {(parse_tmp_name(n).base, parse_tmp_name(n).kind) for n in names} == {
        ("7", SAVING), ("7", DELETING), ("7", REPLACED)}


def test_uncommit_of_a_step_that_is_already_gone_succeeds(tmp_path):
    final = Location.parse(tmp_path / "step")
    protocol = commit_protocol_for(final)
    protocol.commit(protocol.begin(final), final)
    protocol.uncommit(final)
    protocol.uncommit(final)  # a second deleter: success, nothing left behind
    assert list(tmp_path.iterdir()) == []


def test_marker_commit_on_object_store():
    final = Location.parse("memory://test-commit/step")
    protocol = commit_protocol_for(final)
    work = protocol.begin(final)
    assert work == final
    (work / "data").write_text("x")
    assert not protocol.is_committed(final)
    protocol.commit(work, final)
    assert protocol.is_committed(final)
    with pytest.raises(CheckpointExistsError, match=r"found its commit_success.txt: another "
                       r"writer committed it first"):
        protocol.commit(work, final)  # the marker is written only if absent
    protocol.commit(work, final, replace=True)
    protocol.uncommit(final)
    protocol.uncommit(final)
    assert not final.exists()


def test_write_bytes_if_absent_on_disk(tmp_path):
    target = Location.parse(tmp_path / "marker")
    assert target.write_bytes_if_absent(b"one")
    assert not target.write_bytes_if_absent(b"two")
    assert target.read_bytes() == b"one" and sorted(os.listdir(tmp_path)) == ["marker"]


def test_orbax_sees_the_tmp_folders_as_unfinished_saves(tmp_path):
    final = Location.parse(tmp_path / "5")
    protocol = commit_protocol_for(final)
    protocol.commit(protocol.begin(final), final)
    work = protocol.begin(Location.parse(tmp_path / "6"))
    assert orbax_utils.is_tmp_checkpoint(work.path)
    assert orbax_step.tmp_checkpoints(tmp_path) == [work.name]  # what Orbax cleans up
    assert [m.step for m in orbax_step.standard_name_format().find_all(tmp_path)] == [5]


def test_a_save_removes_only_abandoned_tmp_folders_of_its_step(tmp_path):
    final = Location.parse(tmp_path / "step")
    protocol = commit_protocol_for(final)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    mine = protocol.begin(final)  # a live writer: this process
    abandoned = mine.name.replace(f"-{os.getpid()}-", f"-{int(dead.stdout)}-")
    for name in (abandoned, "step.orbax-checkpoint-tmp", "step.orbax-checkpoint-tmp-1712"):
        (tmp_path / name).mkdir()
    protocol.begin(final)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert abandoned not in left and "step.orbax-checkpoint-tmp" not in left
    assert mine.name in left and "step.orbax-checkpoint-tmp-1712" in left  # may be live
