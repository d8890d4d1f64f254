"""Integrity: every flipped byte or truncated file is caught by `verify` and by restore.

The campaign injects seeded corruptions into every file of a composite checkpoint (OCDBT
data files and manifests, `_METADATA`, `_CHECKPOINT_METADATA`, `_sharding`,
`array_metadatas`, `_strings.json`, a JSON item, `_CHECKSUMS`) and sorts each outcome:
  - detected: `verify` raises CorruptCheckpointError, and restore either raises a
    CheckpointError or returns bit-exact data (it may: a damaged B-tree node of an older
    OCDBT version, or of a per-process database after the merge, is never read by restore);
  - harmless: `verify` passes and restore is bit-exact;
  - anything else (verify passes and restore differs, or a non-jaxpoint exception) fails.
The figures are in docs/reliability.md.
"""

from __future__ import annotations

import collections
import json
import random
import shutil
from pathlib import Path

import jaxpoint.core as ocp
import numpy as np
import pytest
import tensorstore as ts
from jaxpoint.core.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    UncommittedCheckpointError,
)
from jaxpoint.core.inspection import VerificationReport, verify
from reliability.conftest import assert_bit_exact, data_files, is_bit_exact, mixed_tree

DATA = Path(__file__).resolve().parents[1] / "data" / "orbax-0.12.8"
CORRUPTIONS = 120  # two per file and kind at least; the campaign is seeded
SEED = 20250501


def _composite_restore(path: Path) -> dict:
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        restored = ckptr.restore(path)
    return {"state": restored["state"], "config": restored["config"]}


@pytest.fixture(scope="module")
def composite(fast_disk: Path) -> tuple[Path, dict]:
    path = fast_disk / "composite"
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(path, args=ocp.args.Composite(
            state=ocp.args.StandardSave(mixed_tree()),
            config=ocp.args.JsonSave({"lr": 0.125, "layers": [1, 2]})))
    return path, _composite_restore(path)


def test_verify_reports_what_it_read(composite):
    path, _ = composite
    report = verify(path)
    assert isinstance(report, VerificationReport)
    assert [item.name for item in report.items] == ["config", "state"]
    state = report.items[1]
    assert (state.kind, state.arrays) == ("pytree", 6)
    assert state.array_bytes == 64 * 300 * 4 + 7 * 4 + 70_000 * 4 + 3 * 5 * 2 + 8 + 8
    assert report.warnings == ()


@pytest.mark.parametrize("case", sorted(p.name for p in DATA.iterdir() if p.is_dir()))
def test_verify_accepts_every_orbax_written_checkpoint(case):
    expected = json.loads((DATA / case / "expected.json").read_text())
    root = DATA / case / "ckpt"
    steps = [root] if (root / "_CHECKPOINT_METADATA").exists() else sorted(
        p for p in root.iterdir() if p.is_dir() and p.name != "metadata")
    for step in steps:
        report = verify(step)
        assert report.arrays >= 1 and report.metadata_files >= 3
        assert any("_CHECKSUMS" in w for w in report.warnings)  # orbax writes none
    assert expected  # the case is real


def test_verify_accepts_legacy_and_single_array_layouts(tmp_path):
    tree = {"x": np.arange(35, dtype=np.float32).reshape(5, 7), "y": {"z": np.ones(4)}}
    legacy = tmp_path / "legacy"
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_zarr3=False)) as ckptr:
        ckptr.save(legacy, args=ocp.args.PyTreeSave(tree))
    assert verify(legacy).arrays == 2
    single = tmp_path / "array"
    with ocp.Checkpointer(ocp.ArrayCheckpointHandler()) as ckptr:
        ckptr.save(single, args=ocp.args.ArraySave(np.arange(6.0)))
    assert verify(single).array_bytes == 48
    root_leaf = tmp_path / "root_leaf"
    ocp.save(root_leaf, np.arange(3.0))
    assert verify(root_leaf).arrays == 1


def test_verify_refuses_what_is_not_a_committed_checkpoint(tmp_path, composite):
    with pytest.raises(CheckpointNotFoundError, match="found nothing"):
        verify(tmp_path / "absent")
    pending = tmp_path / "x.orbax-checkpoint-tmp"
    shutil.copytree(composite[0], pending)
    with pytest.raises(UncommittedCheckpointError, match="unfinished save"):
        verify(pending)
    with pytest.raises(CorruptCheckpointError, match="Pass a checkpoint folder"):
        verify(DATA / "manager_composite_best" / "ckpt")


def _corrupt(path: Path, rng: random.Random, *, truncate: bool) -> str:
    data = bytearray(path.read_bytes())
    position = rng.randrange(len(data))
    if truncate:
        path.write_bytes(bytes(data[:position]))
        return f"truncated to {position} bytes"
    mask = rng.randrange(1, 256)
    data[position] ^= mask
    path.write_bytes(bytes(data))
    return f"byte {position} xor {mask:#04x}"


def test_seeded_corruptions_are_all_detected(composite, fast_disk):
    original, expected = composite
    files = [p.relative_to(original) for p in data_files(original)]
    kinds = {str(f).split("/")[-1] if "/d/" not in str(f) else "OCDBT data file" for f in files}
    assert {"_METADATA", "_CHECKPOINT_METADATA", "_sharding", "process_0", "manifest.ocdbt",
            "OCDBT data file", "_strings.json", "metadata", "_CHECKSUMS"} <= kinds
    rng = random.Random(SEED)
    outcomes: collections.Counter[str] = collections.Counter()
    failures = []
    for number in range(CORRUPTIONS):
        relative = files[number % len(files)]
        copy = fast_disk / f"corrupted{number}"
        shutil.copytree(original, copy)
        how = _corrupt(copy / relative, rng, truncate=number % 4 == 3)
        try:
            verify(copy)
            detected = False
        except CorruptCheckpointError as error:
            detected = True
            message = str(error)
            if str(relative).split("/")[0] not in message:  # the item or the file
                failures.append(f"{relative} {how}: the error does not name it: {message}")
        try:
            exact = is_bit_exact(_composite_restore(copy), expected)
            restored = "exact" if exact else "WRONG"
        except CheckpointError:
            restored = "raised"
        outcomes[f"{'detected' if detected else 'harmless'}, restore {restored}"] += 1
        if restored == "WRONG" or (not detected and restored != "exact"):
            failures.append(f"{relative} {how}: verify {'raised' if detected else 'passed'}, "
                            f"restore {restored}")
        shutil.rmtree(copy)
    print(f"\n{CORRUPTIONS} corruptions: {dict(outcomes)}")
    assert not failures, "\n".join(failures)
    assert sum(n for k, n in outcomes.items() if k.startswith("detected")) == CORRUPTIONS


def _chunk_file(item: Path) -> Path:
    """The per-process data file holding the out-of-line chunks (the largest)."""
    return max((item / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size)


def _chunk_offset(item: Path, key: str, data: bytes) -> int:
    """Where the stored bytes of `key` start in a data file (OCDBT's write order varies)."""
    store = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{item}/ocdbt.process_0/"}).result()
    stored = store.read(key.encode()).result().value
    offset = data.find(stored)
    assert offset >= 0, f"{key} is not stored out of line in the largest data file"
    return offset


@pytest.fixture
def copy(composite, tmp_path) -> Path:
    """A copy of the composite checkpoint, for one test to damage."""
    copied = tmp_path / "ckpt"
    shutil.copytree(composite[0], copied)
    return copied


def _assert_corruption_caught(copy: Path, *, by_verify: str, by_restore: str) -> None:
    """`verify` and a restore both raise CorruptCheckpointError, each with its message."""
    with pytest.raises(CorruptCheckpointError, match=by_verify):
        verify(copy)
    with pytest.raises(CorruptCheckpointError, match=by_restore):
        _composite_restore(copy)


def test_flipped_chunk_byte_names_item_parameter_and_key(copy):
    data_file = _chunk_file(copy / "state")
    data = bytearray(data_file.read_bytes())
    data[_chunk_offset(copy / "state", "params.big/c/0", data) + 100] ^= 0x01
    data_file.write_bytes(bytes(data))
    key = r"\"params.big/c/0\".*Digest mismatch"
    _assert_corruption_caught(copy, by_verify=rf"Item 'state' at .*parameter 'params.big'.*{key}",
                              by_restore=rf"parameter 'params.big' of item .*state: .*{key}")


def test_truncated_data_file_names_the_file(copy):
    data_file = _chunk_file(copy / "state")
    data_file.write_bytes(data_file.read_bytes()[:1000])
    _assert_corruption_caught(copy, by_verify=rf"{data_file.name}.*is not valid for value",
                              by_restore="parameter 'params.*is not valid for value")


def test_damaged_ocdbt_manifest_is_corruption_not_a_storage_error(copy):
    manifest = copy / "state" / "manifest.ocdbt"
    data = bytearray(manifest.read_bytes())
    data[-3] ^= 0xFF
    manifest.write_bytes(bytes(data))
    _assert_corruption_caught(copy, by_verify=r"manifest.ocdbt.*Error decoding manifest",
                              by_restore=r"parameter .* of item .*manifest\.ocdbt")


def test_json_value_change_is_caught_by_checksums(copy):
    strings = copy / "state" / "_strings.json"
    strings.write_text(strings.read_text().replace("run-1", "run-7"))  # still valid JSON
    match = r"state/_strings.json does not match the sha256 digest recorded at save"
    _assert_corruption_caught(copy, by_verify=match, by_restore=match)


def _orbax_copy(case: str, tmp_path: Path) -> Path:
    copy = tmp_path / case
    shutil.copytree(DATA / case / "ckpt", copy)
    return copy


def test_missing_chunk_fails_instead_of_reading_zeros(tmp_path):
    copy = _orbax_copy("pytree_no_ocdbt", tmp_path)  # no _CHECKSUMS: orbax wrote it
    (copy / "x" / "0.0").unlink()
    with pytest.raises(CorruptCheckpointError, match=r"parameter 'x'.*expected 1 chunk\(s\).*found 0"):
        verify(copy)
    with pytest.raises(CorruptCheckpointError, match=r"parameter 'x' .*is missing"):
        ocp.restore(copy)


def test_orbax_metadata_is_cross_checked_without_checksums(tmp_path):
    copy = _orbax_copy("sharded_named_mesh", tmp_path)
    sharding = copy / "_sharding"
    sharding.write_text(sharding.read_text().replace('{\\"id\\": 5}', '{\\"id\\": 7}', 1))
    with pytest.raises(CorruptCheckpointError, match=r"Invalid sharding of parameter .*device mesh"):
        verify(copy)
    copy = _orbax_copy("standard_mixed_dtypes", tmp_path)
    metadata = json.loads((copy / "_METADATA").read_text())
    metadata["tree_metadata"]["('f32',)"]["value_metadata"]["write_shape"] = [170, 5]
    (copy / "_METADATA").write_text(json.dumps(metadata))
    with pytest.raises(CorruptCheckpointError, match=r"(?i)parameter 'f32'.*write_shape \[17, 5\].*\[170, 5\]"):
        verify(copy)


def test_composite_names_a_recorded_item_that_is_missing(copy):
    (copy / "_CHECKSUMS").unlink()  # as if orbax had written it
    shutil.rmtree(copy / "config")
    with pytest.raises(CorruptCheckpointError, match=r"records items \['config'\] but .* no folder"):
        verify(copy)


def test_bounded_read_budget_still_reads_everything(composite):
    report = verify(composite[0], max_in_flight_bytes=4096)
    assert report.array_bytes == verify(composite[0]).array_bytes


def test_restore_after_all_checks_is_bit_exact(composite):
    path, expected = composite
    assert_bit_exact(_composite_restore(path), expected)
