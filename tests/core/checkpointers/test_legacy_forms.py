"""Orbax's legacy checkpointer forms: an item and keywords instead of `args=`.

`Checkpointer.save(path, item, save_args=...)` and `restore(path, item=...,
restore_args=...)` build the handler's registered args and log one deprecation warning
per form; `StandardCheckpointer`'s positional signature is Orbax's current API and logs
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core.errors import InvalidArgumentError, TreeMismatchError, UnregisteredArgsError


def _tree(value: float = 1.0) -> dict[str, np.ndarray]:
    return {"w": np.full((2, 3), value, np.float32), "b": np.arange(4, dtype=np.int64)}


def test_checkpointer_item_and_keywords_build_the_handler_args(
        tmp_path: Path, legacy_deprecations: Callable[[], list[str]]) -> None:
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    for name in ("a", "b"):
        checkpointer.save(tmp_path / name, _tree(2.0),
                          save_args={"w": ocp.SaveArgs(dtype=np.float16), "b": ocp.SaveArgs()})
    restored = checkpointer.restore(tmp_path / "a", item=_tree(0.0), restore_args={
        "w": ocp.RestoreArgs(dtype=np.float64), "b": ocp.RestoreArgs()})
    assert restored["w"].dtype == np.float64  # restore_args reached PyTreeRestore
    np.testing.assert_array_equal(restored["w"], np.full((2, 3), 2.0))
    as_saved = checkpointer.restore(tmp_path / "b", {"w": None, "b": None})
    assert as_saved["w"].dtype == np.float16  # as saved: the positional item is the target
    assert checkpointer.metadata(tmp_path / "b").item_metadata["w"].dtype == np.float16
    assert legacy_deprecations() == [
        "Checkpointer.save(path, item, **kwargs) is a deprecated Orbax call form; jaxpoint "
        "runs it as Checkpointer.save(path, args=PyTreeSave(...)). To migrate, write the "
        "latter (this warning is logged once per process).",
        "Checkpointer.restore(path, item, **kwargs) is a deprecated Orbax call form; jaxpoint "
        "runs it as Checkpointer.restore(path, args=PyTreeRestore(...)). To migrate, write the "
        "latter (this warning is logged once per process).",
    ]


def test_standard_checkpointer_signature_is_current_and_honours_strict(
        tmp_path: Path, legacy_deprecations: Callable[[], list[str]]) -> None:
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "s", _tree(3.0), save_args={"w": ocp.SaveArgs(),
                                                                 "b": ocp.SaveArgs()})
        checkpointer.wait_until_finished()
        wider = {"w": np.zeros((2, 5), np.float32), "b": np.zeros(4, np.int64)}
        with pytest.raises(TreeMismatchError):
            checkpointer.restore(tmp_path / "s", wider, strict=True)
        padded = checkpointer.restore(tmp_path / "s", wider, strict=False)
        np.testing.assert_array_equal(padded["w"][:, :3], np.full((2, 3), 3.0))
        assert padded["w"].shape == (2, 5)
        np.testing.assert_array_equal(checkpointer.restore(tmp_path / "s", _tree(0.0))["b"],
                                      np.arange(4))
    assert legacy_deprecations() == []


def test_pytree_checkpointer_positional_item_is_the_legacy_form(
        tmp_path: Path, legacy_deprecations: Callable[[], list[str]]) -> None:
    checkpointer = ocp.PyTreeCheckpointer()
    checkpointer.save(tmp_path / "p", _tree(4.0))
    checkpointer.save(tmp_path / "q", args=ocp.args.PyTreeSave(_tree(5.0)))
    assert float(checkpointer.restore(tmp_path / "q", ocp.args.PyTreeRestore())["w"][0, 0]) == 5.0
    assert [m.split(" is ")[0] for m in legacy_deprecations()] == [
        "PyTreeCheckpointer.save(path, item, **kwargs)"]


class _UnregisteredHandler:
    typestr = "tests.UnregisteredHandler"


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda c, p: c.save(p, _tree(), args=ocp.args.PyTreeSave(_tree())), InvalidArgumentError,
     r"Expected either args=... or the legacy item and keywords in Checkpointer.save, got "
     r"both: args=PyTreeSave and 1 more positional"),
    (lambda c, p: c.save(p, _tree(), bogus=1), InvalidArgumentError,
     r"Expected the legacy arguments of Checkpointer.save to fit PyTreeSave, got 1 positional "
     r"and keywords \['bogus'\].* To fix, pass args=PyTreeSave\(...\)"),
    (lambda c, p: c.restore(p, args={"w": 1}), UnregisteredArgsError,
     r"Expected a CheckpointArgs object for args= in Checkpointer.restore, got dict"),
    (lambda c, p: ocp.Checkpointer(_UnregisteredHandler()).save(p, _tree()),
     InvalidArgumentError,
     r"Expected a handler with registered save args for the legacy form of "
     r"Checkpointer.save, got _UnregisteredHandler"),
])
def test_malformed_legacy_checkpointer_calls(tmp_path: Path, call, error, match) -> None:
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    checkpointer.save(tmp_path / "existing", args=ocp.args.PyTreeSave(_tree()))
    with pytest.raises(error, match=match):
        call(checkpointer, tmp_path / "existing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_legacy_restore_passes_transforms_to_pytree_restore(tmp_path: Path) -> None:
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    checkpointer.save(tmp_path / "t", args=ocp.args.PyTreeSave({"old": _tree(6.0)}))
    target = {"new": _tree(0.0)}
    renamed = checkpointer.restore(tmp_path / "t", item=target, transforms={
        r"new/(.*)": ocp.Transform(original_key=r"old/\1")})
    np.testing.assert_array_equal(renamed["new"]["w"], np.full((2, 3), 6.0))
    assert list(renamed) == ["new"]
