"""Assertions on what the launches reported and on the files they left."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import tensorstore as ts
from jaxpoint.core.testing.multiprocess import ProcessOutcome


@dataclasses.dataclass(frozen=True, kw_only=True)
class Launch:
    """Where a launch saved, how each process ended and what each one reported."""

    root: Path
    outcomes: list[ProcessOutcome]
    reports: list[dict[str, Any]]

    def check(self, name: str) -> list[Any]:
        """Every process's result of check `name`, in process order."""
        return [report[name] for report in self.reports]


def reraise(result: Any) -> None:
    """Raises the exception a check captured; fails when the check returned instead."""
    assert isinstance(result, BaseException), f"expected the check to raise, it returned {result!r}"
    raise result


def assert_restored(results: list[Any]) -> None:
    """Every process's check returned leaf -> problem with no problem at all."""
    for process, result in enumerate(results):
        if isinstance(result, BaseException):
            raise AssertionError(f"process {process} raised") from result
        problems = result[0] if isinstance(result, tuple) else result
        assert problems and not any(problems.values()), f"process {process}: {problems}"


def stored_keys(database: Path) -> set[str]:
    """Every key of the OCDBT database at `database`."""
    store = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{database}/"}).result()
    return {key.decode() for key in store.list().result()}
