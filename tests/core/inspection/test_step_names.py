"""Step folder names: building and parsing them exactly as Orbax 0.12 does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jaxpoint.core.errors import InvalidArgumentError, InvalidNameError
from jaxpoint.core.inspection import list_steps
from jaxpoint.core.manager import (
    CompositeStepNameFormat,
    composite_name_format,
    standard_name_format,
)
from jaxpoint.core.storage import COMMIT_MARKER, Location
from orbax.checkpoint._src.path import step as orbax_step


def _committed(folder: Path) -> None:
    folder.mkdir()
    (folder / COMMIT_MARKER).write_text("done")


@pytest.mark.parametrize(("prefix", "length", "step", "name"), [
    (None, None, 42, "42"),
    (None, 6, 42, "000042"),
    ("ckpt", None, 42, "ckpt_42"),
    ("ckpt", 6, 42, "ckpt_000042"),
    ("ckpt", 2, 12345, "ckpt_12345"),
    (None, None, 0, "0"),
])
def test_build_name_matches_orbax(prefix, length, step, name) -> None:
    ours = standard_name_format(step_prefix=prefix, step_format_fixed_length=length)
    theirs = orbax_step.standard_name_format(step_prefix=prefix,
                                             step_format_fixed_length=length)
    assert ours.build_name(step) == theirs.build_name(step) == name
    assert ours.parse_name(name) == step


@pytest.mark.parametrize(("prefix", "length", "name"), [
    (None, None, "042"), (None, 6, "42"), (None, 6, "0000042"), ("ckpt", None, "42"),
    ("ckpt", None, "ckpt42"), ("ckpt", None, "other_42"), (None, None, "metadata"),
    (None, None, "_READ_LEASES"), (None, None, "42.orbax-checkpoint-tmp"), (None, None, "-1"),
])
def test_parse_name_rejects_what_orbax_rejects(prefix, length, name) -> None:
    assert standard_name_format(step_prefix=prefix,
                                step_format_fixed_length=length).parse_name(name) is None


def _orbax_parse(prefix: str | None, length: int | None, name: str) -> int | None:
    """The step real Orbax finds in a folder holding only a directory named `name`."""
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / name).mkdir()
        found = orbax_step.standard_name_format(
            step_prefix=prefix, step_format_fixed_length=length).find_all(folder)
        steps = [metadata.step for metadata in found]
    return steps[0] if steps else None


@settings(max_examples=60, deadline=None)
@given(prefix=st.sampled_from([None, "ckpt", "run.v2"]),
       length=st.sampled_from([None, 1, 3, 6]),
       name=st.from_regex(r"\A(ckpt_|run\.v2_)?[0-9]{1,9}\Z"))
def test_parse_name_agrees_with_orbax_on_random_names(prefix, length, name) -> None:
    ours = standard_name_format(step_prefix=prefix, step_format_fixed_length=length)
    assert ours.parse_name(name) == _orbax_parse(prefix, length, name)


@given(prefix=st.sampled_from([None, "ckpt"]), length=st.sampled_from([None, 1, 4, 8]),
       step=st.integers(min_value=0, max_value=10**12))
def test_build_then_parse_round_trips(prefix, length, step) -> None:
    name_format = standard_name_format(step_prefix=prefix, step_format_fixed_length=length)
    assert name_format.parse_name(name_format.build_name(step)) == step


def test_orbax_lists_the_folders_the_same_format_names(tmp_path: Path) -> None:
    name_format = standard_name_format(step_prefix="ckpt", step_format_fixed_length=4)
    for step in (3, 70, 12345):
        _committed(tmp_path / name_format.build_name(step))
    _committed(tmp_path / "ckpt_7")  # not padded: neither side lists it
    theirs = orbax_step.standard_name_format(step_prefix="ckpt", step_format_fixed_length=4)
    assert sorted(m.step for m in theirs.find_all(tmp_path)) == [3, 70, 12345]
    assert list_steps(tmp_path, name_format=name_format).steps == [3, 70, 12345]
    assert list_steps(tmp_path).name_format == name_format  # detected from the names


def test_composite_format_reads_old_names_and_writes_new_ones(tmp_path: Path) -> None:
    new = standard_name_format(step_prefix="ckpt", step_format_fixed_length=6)
    old = standard_name_format()
    both = composite_name_format(new, [new, old])
    for name in ("5", "ckpt_000010"):
        _committed(tmp_path / name)
    assert both.build_name(20) == "ckpt_000020"
    assert list_steps(tmp_path, name_format=both).committed == {5: "5", 10: "ckpt_000010"}


def test_composite_format_must_read_what_it_writes() -> None:
    with pytest.raises(InvalidArgumentError, match="Expected write_format .* among read_formats"):
        CompositeStepNameFormat(write_format=standard_name_format(step_prefix="a"),
                                read_formats=[standard_name_format()])


@pytest.mark.parametrize(("options", "match"), [
    ({"step_prefix": ""}, "Expected step_prefix to be a non-empty str or None, got ''"),
    ({"step_prefix": 7}, "Expected step_prefix to be a non-empty str or None, got 7"),
    ({"step_format_fixed_length": 0}, "Expected step_format_fixed_length to be an int >= 1"),
    ({"step_format_fixed_length": True}, "Expected step_format_fixed_length to be an int >= 1"),
])
def test_bad_name_options_are_refused(options, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        standard_name_format(**options)


def test_prefix_with_a_separator_is_refused() -> None:
    with pytest.raises(InvalidNameError, match="step_prefix to be a single path component"):
        standard_name_format(step_prefix="a/b")


def test_listing_sorts_steps_unfinished_saves_and_damaged_entries(tmp_path: Path) -> None:
    name_format = standard_name_format()
    for name in ("1", "4"):
        _committed(tmp_path / name)
    for name in ("2.orbax-checkpoint-tmp", "3.orbax-checkpoint-tmp-1712",
                 "4.orbax-checkpoint-tmp-deleting",
                 "6.orbax-checkpoint-tmp-1733400000000000000-17-0a1b2c3d-99aa00ff",
                 "7", "5.orbax-checkpoint-tmp.mybackup", "notes.orbax-checkpoint-tmp"):
        (tmp_path / name).mkdir()
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "default").mkdir()  # partial: items but neither marker nor metadata
    (tmp_path / "5").write_text("a file, not a step")
    (tmp_path / "13.orbax-checkpoint-tmp").write_text("a user's file")
    (tmp_path / "9").symlink_to(tmp_path / "9")  # a loop
    listing = list_steps(tmp_path, name_format=name_format)
    assert listing.committed == {1: "1", 4: "4"}
    assert sorted(listing.unfinished) == [
        "2.orbax-checkpoint-tmp", "3.orbax-checkpoint-tmp-1712", "4.orbax-checkpoint-tmp-deleting",
        "6.orbax-checkpoint-tmp-1733400000000000000-17-0a1b2c3d-99aa00ff"]
    reasons = {entry.step: entry.reason for entry in listing.damaged}
    assert sorted(reasons) == [5, 7, 8, 9]
    assert reasons[5] == "it is a file, not a checkpoint folder"
    assert reasons[7] == reasons[8] == ("it is empty or partial: it holds neither "
                                        "commit_success.txt nor _CHECKPOINT_METADATA")
    assert "Too many levels of symbolic links" in reasons[9]


@pytest.mark.parametrize(("names", "prefix", "length"), [
    ([], None, None), (["3", "10", "_READ_LEASES"], None, None), (["000003", "000010"], None, 6),
    (["ckpt_3", "ckpt_4", "7"], "ckpt", None), (["run.v2_0042", "run.v2_0100"], "run.v2", 4),
])
def test_the_name_format_is_detected(tmp_path: Path, names, prefix, length) -> None:
    for name in names:
        _committed(tmp_path / name)
    detected = list_steps(tmp_path).name_format
    assert detected == standard_name_format(step_prefix=prefix, step_format_fixed_length=length)


def test_object_store_lists_only_steps_with_a_commit_marker() -> None:
    root = Location.parse("memory://names-test/run")
    for step in (1, 2):
        (root / str(step) / "default" / "data").write_text("x")
    (root / "1" / COMMIT_MARKER).write_text("done")
    listing = list_steps(root, name_format=standard_name_format())
    assert listing.committed == {1: "1"}
    assert listing.unfinished == ["2"] and listing.damaged == []
    root.remove()
