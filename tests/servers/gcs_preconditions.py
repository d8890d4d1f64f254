"""GCS request preconditions (``ifGenerationMatch`` and friends), as GCS evaluates them.

gcp-storage-emulator ignores all of them, which would let a commit test pass against
the emulator while the same code loses a race on real GCS. A missing object counts
as generation 0 and metageneration 0, which is how GCS defines
``ifGenerationMatch=0`` ("only if absent").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any


class Outcome(enum.Enum):
    """What a failed precondition answers: 304 for conditional reads, else 412."""

    NOT_MODIFIED = 304
    PRECONDITION_FAILED = 412


_TARGET = ("Generation", "Metageneration")


def _current(obj: Mapping[str, Any] | None, field: str) -> int:
    return int(obj[field]) if obj is not None else 0


def _first_value(query: Mapping[str, Sequence[str]], name: str) -> int | None:
    values = query.get(name)
    return int(values[0]) if values else None


def check(
    obj: Mapping[str, Any] | None,
    query: Mapping[str, Sequence[str]],
    *,
    is_read: bool,
    source: bool = False,
) -> tuple[Outcome, str] | None:
    """Returns (outcome, parameter name) for the first failing precondition, or None.

    `obj` is the object's current resource (None when absent); `source` selects the
    ``ifSource*`` parameters that copy, rewrite and move apply to their source object.
    """
    infix = "Source" if source else ""
    for kind in _TARGET:
        current = _current(obj, kind.lower())
        match = _first_value(query, f"if{infix}{kind}Match")
        if match is not None and match != current:
            return Outcome.PRECONDITION_FAILED, f"if{infix}{kind}Match"
        not_match = _first_value(query, f"if{infix}{kind}NotMatch")
        if not_match is not None and not_match == current:
            outcome = Outcome.NOT_MODIFIED if is_read else Outcome.PRECONDITION_FAILED
            return outcome, f"if{infix}{kind}NotMatch"
    return None
