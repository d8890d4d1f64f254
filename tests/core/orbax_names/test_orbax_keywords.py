"""Orbax 0.12.8's keywords of the callables published code calls are taken by jaxpoint's, or
the migration guide lists them with the reason; the guide's table is read here."""

from __future__ import annotations

import inspect
import pathlib
import re
from collections.abc import Callable
from typing import Any

import jaxpoint.core as ocp
import orbax.checkpoint as orbax_ocp
import pytest

GUIDE = pathlib.Path(__file__).resolve().parents[3] / "docs" / "orbax-compatibility.md"
HEADING = "## Orbax keywords jaxpoint does not take"

# The guide's short name -> the dotted path under both `ocp`s.
CALLABLES = {name: name for name in (
    "CheckpointManager", "CheckpointManagerOptions", "CheckpointManager.save",
    "CheckpointManager.restore", "CheckpointManager.should_save", "CheckpointManager.metadata",
    "CheckpointManager.item_metadata", "Checkpointer", "AsyncCheckpointer",
    "PyTreeCheckpointer", "StandardCheckpointer", "AsyncOptions", "PyTreeCheckpointHandler",
    "StandardCheckpointHandler", "JsonCheckpointHandler", "SaveArgs", "RestoreArgs",
    "ArrayRestoreArgs", "Transform", "RestoreTransform")}
CALLABLES.update({
    "PyTreeSave": "args.PyTreeSave", "PyTreeRestore": "args.PyTreeRestore",
    "StandardSave": "args.StandardSave", "StandardRestore": "args.StandardRestore",
    "SingleReplicaArrayHandler": "type_handlers.SingleReplicaArrayHandler",
    "SingleReplicaArrayRestoreArgs": "type_handlers.SingleReplicaArrayRestoreArgs",
    "register_type_handler": "type_handlers.register_type_handler",
    "construct_restore_args": "checkpoint_utils.construct_restore_args",
    "checkpoints_iterator": "checkpoint_utils.checkpoints_iterator",
    "standard_name_format": "path.step.standard_name_format",
    "to_flat_dict": "tree.to_flat_dict", "from_flat_dict": "tree.from_flat_dict",
    "serialize_tree": "tree.serialize_tree", "deserialize_tree": "tree.deserialize_tree",
    "erase_and_create_empty": "test_utils.erase_and_create_empty",
    **{name: f"checkpoint_managers.{name}" for name in (
        "LatestN", "BestN", "EveryNSteps", "EveryNSeconds", "CustomSteps",
        "AnyPreservationPolicy", "FixedIntervalPolicy", "SpecificStepsPolicy",
        "ContinuousCheckpointingPolicy", "AnySavePolicy", "InitialSavePolicy",
        "PreemptionCheckpointingPolicy")},
})


def _resolve(library: Any, dotted: str) -> Callable[..., Any]:
    value = library
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _parameters(target: Callable[..., Any]) -> tuple[set[str], bool]:
    """(named parameters, whether it also takes **kwargs)."""
    function = target.__init__ if isinstance(target, type) else target
    parameters = inspect.signature(function).parameters.values()
    named = {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return named - {"self"}, any(p.kind is p.VAR_KEYWORD for p in parameters)


def _documented() -> dict[tuple[str, str], str]:
    text = GUIDE.read_text()
    assert HEADING in text, f"Expected the heading {HEADING!r} in {GUIDE}."
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w.]+)\((\w+)=\)` \| (.+?) \|$", section, flags=re.MULTILINE)
    return {(name, keyword): why for name, keyword, why in rows}


def _is_taken_through_kwargs(name: str, keyword: str) -> bool:
    """Calls jaxpoint's callable, which takes **kwargs, with the keyword alone."""
    try:
        _resolve(ocp, CALLABLES[name])(**{keyword: None})
    except TypeError as error:
        return keyword not in str(error)
    except Exception:  # noqa: BLE001 - any other complaint means the keyword got through
        return True
    return True


@pytest.fixture(scope="module")
def gaps() -> set[tuple[str, str]]:
    """(callable, Orbax keyword) pairs jaxpoint's callable does not take."""
    found = set()
    for name, dotted in CALLABLES.items():
        theirs, _ = _parameters(_resolve(orbax_ocp, dotted))
        ours, has_kwargs = _parameters(_resolve(ocp, dotted))
        for keyword in sorted(theirs - ours):
            if not keyword.startswith("_") and not (
                    has_kwargs and _is_taken_through_kwargs(name, keyword)):
                found.add((name, keyword))
    return found


def unexplained(gaps: set[tuple[str, str]], documented: dict[tuple[str, str], str]) -> list:
    return sorted(gaps - documented.keys())


def test_every_orbax_keyword_is_taken_or_documented(gaps):
    documented = _documented()
    assert len(documented) > 10, f"Expected the keyword table under {HEADING!r} in {GUIDE}."
    missing = unexplained(gaps, documented)
    assert not missing, (
        f"Expected jaxpoint to take every Orbax 0.12.8 keyword of {sorted(CALLABLES)}, or "
        f"{GUIDE.name} to list it under {HEADING!r}; missing: {missing}. To fix, take the "
        "keyword or add a row `Callable(keyword=)` with the reason."
    )
    stale = sorted(documented.keys() - gaps)
    assert not stale, (
        f"Expected the keyword table in {GUIDE.name} to list only keywords jaxpoint lacks, "
        f"but these are taken now (or the callable is not compared): {stale}. To fix, "
        "delete their rows."
    )


def test_the_keyword_check_can_fail(gaps):
    documented = _documented()
    row = ("SaveArgs", "shard_axes")
    assert unexplained(gaps, {k: v for k, v in documented.items() if k != row}) == [row]
    # A documented keyword really raises, also where jaxpoint's callable takes **kwargs.
    with pytest.raises(TypeError, match="shard_axes"):
        ocp.SaveArgs(shard_axes=())
    with pytest.raises(TypeError, match="use_ocdbt"):
        ocp.PyTreeCheckpointer(use_ocdbt=True)
