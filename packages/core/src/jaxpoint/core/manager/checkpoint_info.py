"""`CheckpointInfo`: what the save and keep policies know about one checkpoint."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from jaxpoint.core.errors import InvalidArgumentError


def utc_now() -> datetime.datetime:
    """The current time, timezone-aware, as every CheckpointInfo holds it."""
    return datetime.datetime.now(tz=datetime.UTC)


def as_step(step: Any, *, what: str = "step") -> int:
    """Returns `step` as a plain Python int >= 0; raises InvalidArgumentError otherwise.

    NumPy and JAX integer scalars are accepted because training loops often hold the step
    in one; the manager hands back plain ints only, so steps always serialise to JSON.
    """
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise InvalidArgumentError(
            f"Expected the {what} to be an int >= 0, got {step!r} of type "
            f"{type(step).__name__}. To fix, pass the training step as an int."
        )
    value = int(step.__index__())
    if value < 0:
        raise InvalidArgumentError(
            f"Expected the {what} to be an int >= 0, got {value}. To fix, count steps from 0."
        )
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointInfo:
    """One checkpoint as policies see it: its step, when it committed, its metrics.

    `time` is the commit time read from `_CHECKPOINT_METADATA` for checkpoints found on
    disk, and the time of `save()` for new ones. `metrics` is None when none were saved.
    """

    step: int
    time: datetime.datetime
    metrics: Mapping[str, Any] | None = None
