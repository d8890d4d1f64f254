"""Orbax's legacy manager forms: each maps onto the `args=` path and logs one warning.

Also `best_fn` with saves that carry no metrics: saved, left unranked, and kept or deleted
by `keep_checkpoints_without_metrics`, as Orbax 0.12.8 does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from core.manager.manager_support import restored_step, save_steps, step_folders, sync_options, tree
from jaxpoint.core import args
from jaxpoint.core.checkpointers import AsyncCheckpointer, AsyncOptions, Checkpointer
from jaxpoint.core.checkpointers.options import MultiprocessingOptions
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.handlers import (
    JsonCheckpointHandler,
    PyTreeCheckpointHandler,
    RestoreArgs,
    SaveArgs,
    StandardCheckpointHandler,
)
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.tree.transforms import Transform


def two_items() -> dict[str, Checkpointer]:
    return {"state": Checkpointer(PyTreeCheckpointHandler()),
            "config": Checkpointer(JsonCheckpointHandler())}


def test_one_checkpointer_is_one_unnamed_item(
        tmp_path: Path, legacy_deprecations: Callable[[], list[str]]) -> None:
    with CheckpointManager(tmp_path, Checkpointer(StandardCheckpointHandler()),
                           CheckpointManagerOptions(max_to_keep=2)) as manager:
        for step in (1, 2, 3):
            assert manager.save(step, tree(step))
            # A sync Checkpointer means sync saves (Orbax's rule): committed on return.
            assert (tmp_path / str(step) / "default" / "_METADATA").is_file()
        assert manager.all_steps() == [2, 3]
        assert restored_step(manager, 3) == 3
        again = manager.restore(2, tree(0), {"strict": True})
        np.testing.assert_array_equal(again["w"], tree(2)["w"])
        assert manager.item_metadata(3)["w"].shape == (2, 3)
    assert legacy_deprecations() == [
        "CheckpointManager(directory, checkpointers, options) is a deprecated Orbax call form; "
        "jaxpoint runs it as CheckpointManager(directory, options=..., item_handlers=...) with "
        "save(step, args=...). To migrate, write the latter (this warning is logged once per "
        "process).",
        "CheckpointManager.save(step, items, save_kwargs) is a deprecated Orbax call form; "
        "jaxpoint runs it as CheckpointManager.save(step, args=...). To migrate, write the "
        "latter (this warning is logged once per process).",
        "CheckpointManager.restore(step, items, restore_kwargs) is a deprecated Orbax call form; "
        "jaxpoint runs it as CheckpointManager.restore(step, args=...). To migrate, write the "
        "latter (this warning is logged once per process).",
    ]


def test_dict_of_checkpointers_saves_and_restores_named_items(
        tmp_path: Path, legacy_deprecations: Callable[[], list[str]]) -> None:
    for run in range(2):  # a second manager in the same process warns no more
        with CheckpointManager(tmp_path / str(run), two_items(), sync_options()) as manager:
            manager.save(1, {"state": tree(1), "config": {"lr": 0.5}},
                         {"state": {"save_args": {"w": SaveArgs(dtype=np.float16),
                                                  "step": SaveArgs()}}})
            manager.save(2, {"state": tree(2)})  # a subset of the items, as Orbax allows
            restored = manager.restore(1, items={"state": None, "config": None},
                                       restore_kwargs={"state": {"restore_args": {
                                           "w": RestoreArgs(restore_type=np.ndarray),
                                           "step": RestoreArgs()}}})
            assert restored["state"]["w"].dtype == np.float16  # save_args reached PyTreeSave
            assert isinstance(restored["state"]["w"], np.ndarray)  # restore_args reached it
            assert dict(restored["config"]) == {"lr": 0.5}
            only_config = manager.restore(1, items={"config": None})
            assert list(only_config) == ["config"]
            assert sorted(manager.restore(2)) == ["state"]
            # item_metadata goes through the checkpointers' handlers
            assert manager.item_metadata(1)["state"]["w"].shape == (2, 3)
            assert str(manager.item_metadata(1)["state"]["w"].dtype) == "float16"
    assert len(legacy_deprecations()) == 3


def test_async_checkpointers_save_in_the_background_with_their_options(tmp_path: Path) -> None:
    committed: list[str] = []
    checkpointer = AsyncCheckpointer(StandardCheckpointHandler(), async_options=AsyncOptions(
        timeout_secs=30, post_finalization_callback=lambda: committed.append("done")))
    with CheckpointManager(tmp_path, checkpointers=checkpointer) as manager:  # by keyword
        manager.save(1, tree(1))
        manager.wait_until_finished()
        assert committed == ["done"] and manager.all_steps() == [1]
    with CheckpointManager(tmp_path / "sync", AsyncCheckpointer(StandardCheckpointHandler()),
                           sync_options()) as manager:
        manager.save(1, tree(1))  # enable_async_checkpointing=False is honoured: sync save
        assert (tmp_path / "sync" / "1" / "default" / "_METADATA").is_file()


def test_jaxpoint_positional_forms_are_not_legacy(
        tmp_path: Path, legacy_deprecations: Callable[[], list[str]]) -> None:
    with CheckpointManager(tmp_path, sync_options()) as manager:
        manager.save(1, args.StandardSave(tree(1)))
        assert int(manager.restore(1, args.StandardRestore(tree(0)))["step"]) == 1
    assert legacy_deprecations() == []


def test_legacy_restore_uses_the_handler_the_step_records(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, sync_options()) as writer:
        save_steps(writer, [4])
    with CheckpointManager(tmp_path, sync_options()) as reader:
        restored = reader.restore(4, items=tree(0))  # StandardRestore(tree(0)), as recorded
        assert int(restored["step"]) == 4


@pytest.mark.parametrize(("build", "match"), [
    (lambda d: CheckpointManager(d, two_items(), item_handlers={"x": JsonCheckpointHandler()}),
     r"Expected either Orbax's legacy checkpointers or item_names / item_handlers, got both"),
    (lambda d: CheckpointManager(d, {"state": PyTreeCheckpointHandler()}),
     r"Expected a Checkpointer for item 'state' in checkpointers, got PyTreeCheckpointHandler"),
    (lambda d: CheckpointManager(d, {"metrics": Checkpointer(JsonCheckpointHandler())}),
     r"Item name 'metrics' in checkpointers is reserved for save\(metrics=...\)"),
    (lambda d: CheckpointManager(d, sync_options(), sync_options()),
     r"Expected CheckpointManagerOptions once, got them both"),
    (lambda d: CheckpointManager(d, 3),
     r"Expected the second argument of CheckpointManager .* got int. To fix, pass "
     r"options=CheckpointManagerOptions"),
    (lambda d: CheckpointManager(d, Checkpointer(
        StandardCheckpointHandler(),
        multiprocessing_options=MultiprocessingOptions(barrier_timeout_s=5))),
     r"Expected the legacy checkpointers to use the manager's multiprocessing options"),
    (lambda d: CheckpointManager(d, AsyncCheckpointer(JsonCheckpointHandler(), async_options=(
        AsyncOptions(post_finalization_callback=print))), sync_options()),
     r"Expected no post_finalization_callback on the legacy checkpointers with "
     r"enable_async_checkpointing=False"),
    (lambda d: CheckpointManager(d, {
        name: AsyncCheckpointer(JsonCheckpointHandler(),
                                async_options=AsyncOptions(post_finalization_callback=print
                                                           if name == "a" else repr))
        for name in ("a", "b")}),
     r"Expected at most one post_finalization_callback among the legacy checkpointers, got 2"),
])
def test_malformed_legacy_construction(tmp_path: Path, build: Any, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        build(tmp_path)


@pytest.mark.parametrize(("call", "match"), [
    (lambda m: m.save(1, {"state": tree(1)}, args=args.Composite(state=args.PyTreeSave(tree(1)))),
     r"Expected either args= or Orbax's legacy items / save_kwargs in save\(step=1\), got "
     r"both"),
    (lambda m: m.save(1, args.Composite(config=args.JsonSave({})), args=args.Composite()),
     r"Expected args once in save\(step=1\), got Composite as the second positional argument"),
    (lambda m: m.save(1, {"state": tree(1), "optimizer": tree(1)}),
     r"Expected a handler for item 'optimizer' in the legacy form of save\(step=1\), found "
     r"none \(items with handlers: \['config', 'state'\]\)"),
    (lambda m: m.save(1, [tree(1)]),
     r"Expected items to be a dict \{item name: item\} in save\(step=1\): this manager holds "
     r"named items, got list"),
    (lambda m: m.save(1, {"state": tree(1)}, {"state": {"bogus": 1}}),
     r"Expected the legacy arguments of CheckpointManager.save\(step=1\) of item 'state' to "
     r"fit PyTreeSave, got 1 positional and keywords \['bogus'\]"),
    (lambda m: m.save(1, {"state": tree(1)}, {"state": [1]}),
     r"Expected the legacy kwargs in save\(step=1\) of item 'state' to be a dict"),
    (lambda m: m.restore(7, items={"config": None}, args=args.Composite(config=None)),
     r"Expected either args= or Orbax's legacy items / restore_kwargs in restore\(step=7\), "
     r"got both"),
])
def test_malformed_legacy_save_and_restore(tmp_path: Path, call: Any, match: str) -> None:
    with CheckpointManager(tmp_path, two_items(), sync_options()) as manager:
        manager.save(7, {"state": tree(7), "config": {"a": 1}})
        with pytest.raises(InvalidArgumentError, match=match):
            call(manager)
        assert manager.all_steps() == [7]


def test_legacy_forms_of_a_single_item_need_an_item_and_a_handler(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, Checkpointer(StandardCheckpointHandler()),
                           sync_options()) as manager:
        with pytest.raises(InvalidArgumentError,
                           match=r"Expected the item to save in save\(step=1\), got only "
                                 r"save_kwargs"):
            manager.save(1, None, {"save_args": None})
    with CheckpointManager(tmp_path / "bare", sync_options()) as bare:
        with pytest.raises(InvalidArgumentError,
                           match=r"Expected a handler for item 'default' in the legacy form of "
                                 r"save\(step=1\), found none"):
            bare.save(1, tree(1))


@pytest.mark.parametrize(("keep", "kept"), [(True, [1, 2, 3, 5]), (False, [1, 3])])
def test_best_fn_with_saves_without_metrics(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                            keep: bool, kept: list[int]) -> None:
    caplog.set_level(logging.WARNING)
    options = sync_options(max_to_keep=2, best_fn=lambda m: m["loss"], best_mode="min",
                           keep_checkpoints_without_metrics=keep)
    with CheckpointManager(tmp_path, options) as manager:
        save_steps(manager, [2])
        assert manager.best_step() is None  # nothing ranked yet, as in Orbax
        save_steps(manager, [1, 3, 4, 5], losses={1: 0.5, 3: 0.2, 4: 0.9})
        assert manager.all_steps() == kept and manager.best_step() == 3
        assert manager.metrics(3) == {"loss": 0.2}
        assert manager.metrics(1) == {"loss": 0.5}
        if keep:
            assert manager.metrics(2) is None and manager.metrics(5) is None
    assert step_folders(tmp_path) == [str(s) for s in kept]
    with CheckpointManager(tmp_path, options) as reopened:  # the same from the files
        assert reopened.all_steps() == kept and reopened.best_step() == 3
    warned = [r for r in caplog.records if "saved without metrics" in r.getMessage()]
    assert len(warned) == 1 and f"keep_checkpoints_without_metrics={keep}" in \
        warned[0].getMessage()


def test_legacy_restore_kwargs_reach_pytree_restore_transforms(tmp_path: Path) -> None:
    with CheckpointManager(tmp_path, two_items(), sync_options()) as manager:
        manager.save(1, {"state": {"old": tree(1)}, "config": {"a": 1}})
        restored = manager.restore(1, items={"state": {"new": tree(0)}}, restore_kwargs={
            "state": {"transforms": {r"new/(.*)": Transform(original_key=r"old/\1")}}})
        assert int(restored["state"]["new"]["step"]) == 1 and list(restored) == ["state"]
