"""`PLACEHOLDER`: a target leaf that asks a restore to skip what is saved there.

It is Python's `...`, as in Orbax, so trees built with either library's name agree.
"""

from __future__ import annotations

from typing import Any

PLACEHOLDER = ...
Placeholder = type(PLACEHOLDER)


def is_placeholder(value: Any) -> bool:
    """Whether `value` is the placeholder (compared by identity: arrays have no `==`)."""
    return value is PLACEHOLDER
