"""Hostile input: metadata is data, never code, and never a way out of the checkpoint folder.

An attacker who can write a checkpoint controls every byte of it, `_CHECKSUMS` included
(they delete it), so these tests remove it and attack the parsers directly. Every case
must fail with a CheckpointError, within 2 s and without allocating gigabytes; the
hypothesis fuzzers hold the metadata readers to the same rule on a fixed budget.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import resource
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jaxpoint.core as ocp
import numpy as np
import pytest
import tensorstore as ts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jaxpoint.core.checkpointers.step_metadata import read_step_metadata
from jaxpoint.core.errors import CheckpointError, CorruptCheckpointError, InvalidArgumentError
from jaxpoint.core.handlers.pytree_metadata import read_tree_record
from jaxpoint.core.handlers.sharding_metadata import read_shardings, sharding_from_description
from jaxpoint.core.inspection import verify
from jaxpoint.core.storage import Location, read_json

PACKAGE = Path(ocp.__file__).resolve().parent
SECONDS = 2.0
RSS_GROWTH_BYTES = 256 * 2**20
FUZZ = settings(max_examples=150, deadline=2000, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _unprotected(path: Path) -> Path:
    (path / "_CHECKSUMS").unlink()  # the attacker's first move
    return path


@pytest.fixture(scope="module")
def template(fast_disk: Path) -> Path:
    """A tree with a large array (TensorStore path), a small one (bulk path) and a string."""
    path = fast_disk / "template"
    ocp.save(path, {"w": np.ones((200, 300), np.float32), "s": {"b": np.arange(5)},
                    "name": "x"})
    return _unprotected(path)


@pytest.fixture(scope="module")
def legacy_template(fast_disk: Path) -> Path:
    """One plain zarr folder per parameter (orbax's layout without OCDBT)."""
    path = fast_disk / "legacy"
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_zarr3=False)) as ckptr:
        ckptr.save(path, args=ocp.args.PyTreeSave({"w": np.arange(12.0).reshape(3, 4)}))
    return _unprotected(path)


@pytest.fixture
def checkpoint(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ckpt"
    shutil.copytree(template, copy)
    return copy


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _fails_cleanly(call: Callable[[], Any], match: str) -> None:
    """`call` raises a CheckpointError matching `match`, fast and without a memory spike."""
    rss, start = _max_rss_bytes(), time.perf_counter()
    with pytest.raises(CheckpointError, match=match):
        call()
    assert time.perf_counter() - start < SECONDS
    assert _max_rss_bytes() - rss < RSS_GROWTH_BYTES


def _edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    value = json.loads(path.read_text())
    path.write_text(json.dumps(edit(value)))


def _set_leaf_keys(keys: list[str]) -> Callable[[dict], dict]:
    def edit(metadata: dict) -> dict:
        entry = metadata["tree_metadata"].pop("('w',)")
        entry["key_metadata"] = [{"key": k, "key_type": 2} for k in keys]
        metadata["tree_metadata"][str(tuple(keys))] = entry
        return metadata
    return edit


def _snapshot(root: Path, skip: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if skip not in p.parents and p != skip}


# --- names cannot escape ---------------------------------------------------------------

@pytest.mark.parametrize("keys", [["..", "bait"], ["../bait"], ["a/../../bait"], ["/etc"],
                                  [""], ["."], ["w\\..\\bait"], ["w\x00"]])
@pytest.mark.parametrize("layout", ["ocdbt", "legacy"])
def test_tree_keys_in_metadata_cannot_leave_the_checkpoint(keys, layout, template,
                                                           legacy_template, tmp_path):
    source = template if layout == "ocdbt" else legacy_template
    root = tmp_path / "root"
    checkpoint = root / "ckpt"
    shutil.copytree(source, checkpoint)
    # Bait: a readable array just outside, where a followed `..` would land.
    shutil.copytree(legacy_template / "w", root / "bait")
    before = _snapshot(tmp_path, checkpoint)
    _edit_json(checkpoint / "_METADATA", _set_leaf_keys(keys))
    match = r"_METADATA: entry .* (escape|break) the checkpoint folder"
    _fails_cleanly(lambda: ocp.restore(checkpoint), match)
    _fails_cleanly(lambda: verify(checkpoint), match)
    _fails_cleanly(lambda: ocp.Checkpointer(ocp.StandardCheckpointHandler()).metadata(checkpoint),
                   match)
    assert _snapshot(tmp_path, checkpoint) == before


@pytest.mark.parametrize("name", ["../bait", "/etc/passwd", "a/../../bait", "..", 5])
def test_checksum_listing_cannot_point_outside(name, checkpoint, tmp_path):
    (tmp_path / "bait").write_text("secret")
    listed = {"algorithm": "sha256", "files": {name: "0" * 64}}
    (checkpoint / "_CHECKSUMS").write_text(json.dumps(listed) if not isinstance(name, int)
                                           else json.dumps(listed).replace('"5"', "5"))
    match = r"lists the path .*not a file inside|not valid JSON|Expected .* to hold"
    _fails_cleanly(lambda: ocp.restore(checkpoint), match)
    _fails_cleanly(lambda: verify(checkpoint), match)


def test_recorded_item_names_cannot_point_outside(tmp_path):
    path = tmp_path / "ckpt"
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(path, args=ocp.args.Composite(state=ocp.args.StandardSave({"a": np.ones(2)})))
    _unprotected(path)
    _edit_json(path / "_CHECKPOINT_METADATA", lambda m: {**m, "item_handlers": {
        "../../bait": m["item_handlers"]["state"], "state": m["item_handlers"]["state"]}})
    _fails_cleanly(lambda: verify(path), r"records items \['../../bait'\] but .* no folder")
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        restored = ckptr.restore(path)  # items come from the folder's listing, not the file
    assert list(restored) == ["state"]


# --- metadata is data, never code --------------------------------------------------------

@pytest.fixture
def probe_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An importable module whose import would leave a file behind."""
    name = f"jaxpoint_probe_{os.getpid()}"
    sentinel = tmp_path / "imported"
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / f"{name}.py").write_text(
        f"open({str(sentinel)!r}, 'w').write('imported')\nclass Evil:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    yield name, sentinel
    sys.modules.pop(name, None)


def test_named_types_are_looked_up_never_imported(probe_module, tmp_path):
    module, sentinel = probe_module
    evil = f"{module}.Evil"
    path = tmp_path / "ckpt"
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(path, args=ocp.args.Composite(state=ocp.args.StandardSave({"a": np.ones(2)})))
    _unprotected(path)
    _edit_json(path / "_CHECKPOINT_METADATA", lambda m: {**m, "item_handlers": {"state": evil}})
    _edit_json(path / "state" / "_METADATA", lambda m: {**m, "tree_metadata": {
        k: {**v, "value_metadata": {**v["value_metadata"], "value_type": evil}}
        for k, v in m["tree_metadata"].items()}})
    _edit_json(path / "state" / "_sharding", lambda m: {
        k: json.dumps({"sharding_type": evil}) for k in m})
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        with pytest.raises(InvalidArgumentError, match=r"No handler known for item 'state'"):
            ckptr.restore(path)
        ckptr.metadata(path)
    with pytest.raises(CorruptCheckpointError, match=rf"unknown value_type '{evil}'"):
        verify(path)
    (path / "_CHECKPOINT_METADATA").write_text(json.dumps({"item_handlers": evil}))
    with pytest.raises(CorruptCheckpointError, match=r"unknown value_type"):
        verify(path)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        assert list(ckptr.restore(path)) == []  # no handler known: nothing is restored
    assert module not in sys.modules and not sentinel.exists()


class _Trap:
    """Unpickling this would create `path`: proof that a reader used pickle."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("target", ["_METADATA", "_CHECKPOINT_METADATA", "_sharding",
                                    "_strings.json", "array_metadatas/process_0",
                                    "s.b/zarr.json"])
def test_pickled_metadata_is_rejected_not_loaded(target, checkpoint, tmp_path):
    sentinel = tmp_path / "unpickled"
    payload = pickle.dumps(_Trap(sentinel))
    if target.endswith("zarr.json"):
        store = ts.KvStore.open({"driver": "ocdbt", "base": {"driver": "file",
                                                            "path": f"{checkpoint}/"}}).result()
        store.write(target.encode(), payload).result()
    else:
        (checkpoint / target).write_bytes(payload)
    with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
        verify(checkpoint)
    if target in ("_sharding", "_CHECKPOINT_METADATA"):  # a single item's restore skips them
        assert ocp.restore(checkpoint)["w"].shape == (200, 300)
    else:
        with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
            ocp.restore(checkpoint)
    assert not sentinel.exists()


def test_no_metadata_reader_can_run_code():
    """Static guard: the library (its test helpers aside) never deserialises code."""
    forbidden = re.compile(r"\b(pickle|marshal|shelve|dill|cloudpickle|yaml|eval|exec|__import__|"
                           r"import_module|find_spec)\b")
    offenders = []
    for source in sorted(PACKAGE.rglob("*.py")):
        # Test helpers pickle their own results; a package `__init__` loads its submodules
        # lazily from its own table of names.
        if "testing" in source.relative_to(PACKAGE).parts or source.name == "__init__.py":
            continue
        for number, line in enumerate(source.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if forbidden.search(code) and not code.lstrip().startswith(('"', "'")):
                offenders.append(f"{source.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert offenders == []


# --- hostile _METADATA ------------------------------------------------------------------

def _write(path: Path, data: bytes | str) -> None:
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def test_huge_metadata_file_is_refused_before_reading(checkpoint):
    with open(checkpoint / "_METADATA", "r+b") as f:
        f.truncate(8 * 2**30)  # sparse: 8 GiB that occupy no disk
    match = r"_METADATA is 8589934592 bytes; expected at most"
    _fails_cleanly(lambda: ocp.restore(checkpoint), match)
    _fails_cleanly(lambda: verify(checkpoint), match)


@pytest.mark.parametrize(("content", "match"), [
    ("[" + "{}," * 10_000_000 + "{}]", r"about \d+ JSON values; expected at most 4000000"),
    ("[" * 200_000 + "]" * 200_000, r"not valid JSON \(maximum recursion|nests deeper"),
    ('{"tree_metadata": ' + '{"a":' * 100 + "1" + "}" * 100 + "}", r"nests deeper than 64"),
    ("\xff\xfe not json", r"not valid JSON"),
    ("[]", r"hold a JSON dict, found list"),
    ('{"tree_metadata": []}', r"no tree_metadata object"),
    ('{"tree_metadata": {"x": {"key_metadata": 5}}}', r"lacks a key_metadata list"),
    ('{"tree_metadata": {"x": {"key_metadata": [{"key": 1.5}]}}}', r"malformed key"),
    ('{"tree_metadata": {"x": {"key_metadata": [{"key": "w", "key_type": 99}], '
     '"value_metadata": {"value_type": "jax.Array"}}}}', r"unknown key_type 99"),
    ('{"tree_metadata": {"x": {"key_metadata": [{"key": "w", "key_type": 2}], '
     '"value_metadata": {"value_type": 7}}}}', r"lacks value_metadata.value_type"),
    ('{"tree_metadata": {"x": {"key_metadata": [{"key": "w", "key_type": 2}], '
     '"value_metadata": {"value_type": "jax.Array", "write_shape": [-1, 4]}}}}',
     r"invalid write_shape \[-1, 4\]"),
    ('{"tree_metadata": {"x": {"key_metadata": [{"key": "w", "key_type": 2}], '
     '"value_metadata": {"value_type": "jax.Array", "write_shape": [1180591620717411303424]}}}}',
     r"invalid write_shape"),
    ('{"tree_metadata": {"x": {"key_metadata": [{"key": "a.b", "key_type": 2}], '
     '"value_metadata": {"value_type": "scalar"}}, "y": {"key_metadata": [{"key": "a", '
     '"key_type": 2}, {"key": "b", "key_type": 2}], "value_metadata": {"value_type": '
     '"scalar"}}}}', r"both name parameter 'a.b'"),
    ('{"tree_metadata": {"x": {"key_metadata": [{"key": "a", "key_type": 2}], '
     '"value_metadata": {"value_type": "scalar"}}, "y": {"key_metadata": [{"key": "a", '
     '"key_type": 2}, {"key": "b", "key_type": 2}], "value_metadata": {"value_type": '
     '"scalar"}}}}', r"lies inside the leaf at \['a'\]"),
    ('{"tree_metadata": {}, "use_zarr3": "yes"}', r"use_zarr3 is 'yes', expected true or false"),
])
def test_hostile_tree_metadata_fails_cleanly(content, match, checkpoint):
    _write(checkpoint / "_METADATA", content)
    _fails_cleanly(lambda: ocp.restore(checkpoint), match)
    _fails_cleanly(lambda: verify(checkpoint), match)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("item_handlers", 5, r"Expected item_handlers .* got 5"),
    ("item_handlers", {"state": 5}, r"Expected item_handlers"),
    ("metrics", [1, 2], r"Expected metrics to be a JSON object"),
    ("commit_timestamp_nsecs", "soon", r"Expected commit_timestamp_nsecs to be an integer"),
])
def test_hostile_step_metadata_fails_cleanly(field, value, match, checkpoint):
    _edit_json(checkpoint / "_CHECKPOINT_METADATA", lambda m: {**m, field: value})
    _fails_cleanly(lambda: verify(checkpoint), match)
    _fails_cleanly(lambda: ocp.Checkpointer(ocp.StandardCheckpointHandler()).metadata(checkpoint),
                   match)


def test_hostile_side_files_fail_cleanly(template, tmp_path):
    cases = [
        ("array_metadatas/process_0", '{"array_metadatas": 5}', r"Expected a list"),
        ("array_metadatas/process_0", '{"array_metadatas": [[1]]}', r"Expected objects|describes"),
        ("_strings.json", '{"name": 5}', r"Expected string leaf 'name'|exactly the string"),
        ("_strings.json", '{}', r"Expected string leaf 'name'|exactly the string"),
    ]
    for number, (target, content, match) in enumerate(cases):
        copy = tmp_path / f"c{number}"
        shutil.copytree(template, copy)
        _write(copy / target, content)
        _fails_cleanly(lambda copy=copy: ocp.restore(copy), match)
        _fails_cleanly(lambda copy=copy: verify(copy), match)


def test_garbage_shardings_never_change_restored_data(checkpoint, template):
    expected = ocp.restore(template)
    _write(checkpoint / "_sharding", json.dumps({
        base64.urlsafe_b64encode(b"w").decode(): json.dumps(
            {"sharding_type": "NamedSharding", "shape": [2**40], "axis_names": ["x"],
             "partition_spec": ["nope"], "device_mesh": {"mesh": [[{"id": "a"}]]}}),
        "!!!": "[" * 10_000 + "]" * 10_000}))
    restored = ocp.restore(checkpoint)  # the saved sharding is advice, never required
    assert np.array_equal(restored["w"], expected["w"])
    _fails_cleanly(lambda: verify(checkpoint), r"_sharding has a sharding for 'w'|Invalid")


# --- hostile zarr metadata -----------------------------------------------------------------

def _database(path: Path) -> ts.KvStore:
    return ts.KvStore.open({"driver": "ocdbt", "base": {"driver": "file", "path": f"{path}/"}}).result()


def _zarr_json(path: Path, name: str) -> dict:
    return json.loads(_database(path).read(f"{name}/zarr.json".encode()).result().value)


HOSTILE_ZARR = [
    ({"shape": [2**60, 300]}, r"would need .* GiB of host memory|would hold \d+ bytes"),
    ({"shape": [2**62, 2**62]}, r"shape|Error parsing|out of range|would need|would hold|chunk"),
    ({"shape": [-1, 300]}, r"Error parsing object member \"shape\""),
    ({"shape": "200x300"}, r"Error parsing object member \"shape\""),
    ({"data_type": "object"}, r"data_type"),
    ({"data_type": 7}, r"data_type"),
    ({"codecs": [{"name": "pickle"}]}, r"pickle"),
    ({"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [0, 0]}}},
     r"chunk_shape|chunk_grid"),
    ({"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2**40, 2**40]}},
      "shape": [2**40, 2**40]}, r"would need .* GiB|chunk|shape"),
    ({"attributes": {"a": json.loads("[" * 60 + "]" * 60)}}, None),  # legal, if odd
]


@pytest.mark.parametrize(("change", "match"), HOSTILE_ZARR)
def test_hostile_zarr_metadata_fails_cleanly(change, match, checkpoint):
    header = {**_zarr_json(checkpoint, "w"), **change}
    _database(checkpoint).write(b"w/zarr.json", json.dumps(header).encode()).result()
    if match is None:
        assert ocp.restore(checkpoint)["w"].shape == (200, 300)
        verify(checkpoint)
        return
    _fails_cleanly(lambda: ocp.restore(checkpoint), match)
    _fails_cleanly(lambda: verify(checkpoint), match)


@pytest.mark.parametrize(("raw", "match"), [
    (b"[" * 400_000 + b"]" * 400_000, r"zarr metadata 'zarr.json' of parameter 'w'.*(not valid JSON|nests)"),
    (b'{"a": "' + b"x" * (4 * 2**20) + b'"}', r"zarr metadata 'zarr.json' .* is \d+ bytes; expected at most 1048576"),
])
def test_zarr_metadata_that_would_crash_tensorstore_never_reaches_it(raw, match, checkpoint):
    # A 400,000-deep header makes TensorStore's JSON parser overflow its stack (SIGSEGV).
    _database(checkpoint).write(b"w/zarr.json", raw).result()
    _fails_cleanly(lambda: ocp.restore(checkpoint), match)
    _fails_cleanly(lambda: verify(checkpoint), match)


@pytest.mark.parametrize(("change", "match"), [
    ({"shape": [2**60, 4]}, r"would need .* GiB of host memory|would hold \d+ bytes"),
    ({"shape": [-3, 4]}, r"shape"),
    ({"dtype": "|O"}, r"dtype"),
    ({"compressor": {"id": "pickle"}}, r"pickle"),
])
def test_hostile_legacy_zarray_fails_cleanly(change, match, legacy_template, tmp_path):
    copy = tmp_path / "legacy"
    shutil.copytree(legacy_template, copy)
    _edit_json(copy / "w" / ".zarray", lambda m: {**m, **change})
    _fails_cleanly(lambda: ocp.restore(copy), match)
    _fails_cleanly(lambda: verify(copy), match)


# --- fuzzing, on a fixed budget --------------------------------------------------------------

_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
            | st.text(max_size=8) | st.sampled_from(["jax.Array", "np.ndarray", "scalar", "..", "w"]))
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=8)


def _key_entry() -> st.SearchStrategy:
    key = st.fixed_dictionaries({"key": st.sampled_from(["w", "s", "b", "0", ".."]) | _SCALARS,
                                 "key_type": st.sampled_from([1, 2]) | _SCALARS})
    value = st.fixed_dictionaries(
        {"value_type": st.sampled_from(["jax.Array", "np.ndarray", "scalar", "string", "None",
                                        "Dict"]) | _SCALARS},
        optional={"write_shape": st.lists(st.integers(-2, 2**63), max_size=3) | _JSON,
                  "skip_deserialize": _SCALARS})
    return st.fixed_dictionaries({"key_metadata": st.lists(key, max_size=3) | _JSON,
                                  "value_metadata": value | _JSON})


_TREE_METADATA = st.fixed_dictionaries(
    {"tree_metadata": st.dictionaries(st.text(max_size=8), _key_entry(), max_size=4) | _JSON},
    optional={"use_ocdbt": _SCALARS, "use_zarr3": _SCALARS,
              "store_array_data_equal_to_fill_value": _SCALARS, "custom_metadata": _JSON})


def _only_checkpoint_errors(*calls: Callable[[], Any]) -> None:
    for call in calls:
        try:
            call()
        except CheckpointError:
            pass


@FUZZ
@given(metadata=_TREE_METADATA)
def test_fuzz_tree_metadata(metadata, template):
    path = template.parent / "fuzz_tree"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(template, path)
    (path / "_METADATA").write_text(json.dumps(metadata))
    location = Location.parse(path)
    _only_checkpoint_errors(lambda: read_tree_record(location), lambda: ocp.restore(path),
                            lambda: verify(path))


@FUZZ
@given(data=st.binary(max_size=256) | _JSON.map(lambda v: json.dumps(v).encode()),
       target=st.sampled_from(["_CHECKPOINT_METADATA", "_sharding", "_strings.json",
                               "array_metadatas/process_0", "_METADATA"]))
def test_fuzz_metadata_files(data, target, template):
    path = template.parent / "fuzz_files"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(template, path)
    (path / target).write_bytes(data)
    location = Location.parse(path)
    _only_checkpoint_errors(lambda: read_json(location / target, expect=object),
                            lambda: read_step_metadata(location), lambda: ocp.restore(path),
                            lambda: verify(path))
    for info in read_shardings(location).values():  # tolerant by design: never raises
        sharding_from_description(info)


@settings(FUZZ, max_examples=100)
@given(field=st.sampled_from(["shape", "data_type", "chunk_grid", "chunk_key_encoding",
                              "codecs", "fill_value", "node_type", "zarr_format",
                              "dimension_names", "attributes"]),
       value=_JSON, drop=st.booleans(), name=st.sampled_from(["w", "s.b"]))
def test_fuzz_zarr_metadata(field, value, drop, name, template):
    path = template.parent / "fuzz_zarr"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(template, path)
    header = _zarr_json(path, name)
    if drop:
        header.pop(field, None)
    else:
        header[field] = value
    _database(path).write(f"{name}/zarr.json".encode(), json.dumps(header).encode()).result()
    _only_checkpoint_errors(lambda: ocp.restore(path), lambda: verify(path))
