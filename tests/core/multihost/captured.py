"""A child process's call carried back to the test as a value, its exception included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def capture(call: Callable[[], Any]) -> Any:
    """Runs `call`, returning its exception instead of raising it (exceptions pickle back)."""
    try:
        return call()
    except Exception as error:
        return error


def reraise(result: Any) -> None:
    """Raises the exception `capture` returned; fails when the call returned instead."""
    assert isinstance(result, BaseException), f"expected the call to raise, it returned {result!r}"
    raise result
