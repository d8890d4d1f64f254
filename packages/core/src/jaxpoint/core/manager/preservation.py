"""Preservation policies: which checkpoints the manager keeps after each save.

A policy is any object with `should_preserve(checkpoints, *, context) -> list[bool]`,
one flag per checkpoint (oldest first); the signature Orbax's policies have. The manager
deletes a checkpoint only when no policy preserves it; combine policies with
`AnyPreservationPolicy`. The flat options map onto these (`options.preservation_policy_for`):
`keep_period` -> EveryNSteps, `keep_time_interval` -> EveryNSeconds, `best_fn` +
`max_to_keep` -> BestN, otherwise `max_to_keep` -> LatestN, all joined by "any".

    >>> keep = AnyPreservationPolicy([LatestN(3), EveryNSteps(1000)])
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, cast, runtime_checkable

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.manager.checkpoint_info import CheckpointInfo, as_step
from jaxpoint.core.validation import require_int_at_least, require_policies


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreservationContext:
    """Reserved for what policies may need beyond the checkpoints; empty today."""


@runtime_checkable
class PreservationPolicy(Protocol):
    """Returns, for each checkpoint (oldest first), whether it must be kept."""

    def should_preserve(self, checkpoints: Sequence[CheckpointInfo], *,
                        context: PreservationContext) -> Sequence[bool]: ...


def _count(value: object, *, what: str, minimum: int) -> None:
    require_int_at_least(value, minimum, what=what, fix=f"pass a whole number >= {minimum}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreserveAll:
    """Keeps every checkpoint."""

    def should_preserve(self, checkpoints: Sequence[CheckpointInfo], *,
                        context: PreservationContext) -> list[bool]:
        return [True] * len(checkpoints)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatestN:
    """Keeps the `n` newest checkpoints (all when n is None)."""

    n: int | None = dataclasses.field(default=None, kw_only=False)

    def __post_init__(self) -> None:
        if self.n is not None:
            _count(self.n, what="LatestN.n", minimum=0)

    def should_preserve(self, checkpoints: Sequence[CheckpointInfo], *,
                        context: PreservationContext) -> list[bool]:
        if self.n is None:
            return [True] * len(checkpoints)
        first_kept = len(checkpoints) - self.n
        return [i >= first_kept for i in range(len(checkpoints))]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EveryNSteps:
    """Keeps every checkpoint whose step is a multiple of `interval_steps`, forever."""

    interval_steps: int = dataclasses.field(kw_only=False)

    def __post_init__(self) -> None:
        _count(self.interval_steps, what="EveryNSteps.interval_steps", minimum=1)

    def should_preserve(self, checkpoints: Sequence[CheckpointInfo], *,
                        context: PreservationContext) -> list[bool]:
        return [info.step % self.interval_steps == 0 for info in checkpoints]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EveryNSeconds:
    """Keeps the oldest checkpoint, then each one at least `interval_secs` after the last kept."""

    interval_secs: float = dataclasses.field(kw_only=False)

    def __post_init__(self) -> None:
        interval = self.interval_secs
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise InvalidArgumentError(
                f"Expected EveryNSeconds.interval_secs to be a number > 0, got {interval!r}."
            )

    def should_preserve(self, checkpoints: Sequence[CheckpointInfo], *,
                        context: PreservationContext) -> list[bool]:
        interval = datetime.timedelta(seconds=self.interval_secs)
        flags, last_kept = [], None
        for info in checkpoints:
            keep = last_kept is None or info.time - last_kept >= interval
            flags.append(keep)
            last_kept = info.time if keep else last_kept
        return flags


@dataclasses.dataclass(frozen=True, kw_only=True)
class CustomSteps:
    """Keeps the checkpoints of the listed steps."""

    steps: Collection[int] = dataclasses.field(kw_only=False)

    def __post_init__(self) -> None:
        steps = frozenset(as_step(s, what="step in CustomSteps.steps") for s in self.steps)
        object.__setattr__(self, "steps", steps)

    def should_preserve(self, checkpoints: Sequence[CheckpointInfo], *,
                        context: PreservationContext) -> list[bool]:
        return [info.step in self.steps for info in checkpoints]


def metric_value(get_metric_fn: Callable[[Mapping[str, Any]], Any], info: CheckpointInfo) -> Any:
    """`get_metric_fn(info.metrics)`, with an error naming the step when it fails."""
    try:
        return get_metric_fn(cast(Mapping[str, Any], info.metrics))
    except Exception as error:
        raise InvalidArgumentError(
            f"Expected best_fn to turn the metrics of step {info.step} into a comparable "
            f"value, but it raised {type(error).__name__}: {error} on metrics "
            f"{dict(info.metrics or {})!r}. To fix, make best_fn handle these metrics, or "
            "pass the metrics it reads to every save()."
        ) from error


def ranked_by_metric(checkpoints: Sequence[CheckpointInfo],
                     get_metric_fn: Callable[[Mapping[str, Any]], Any], *,
                     reverse: bool) -> list[CheckpointInfo]:
    """Checkpoints with metrics, worst first and best last; ties keep step order.

    `reverse=False` ranks larger values better (best_mode "max"), `reverse=True` smaller.
    """
    with_metrics = [info for info in checkpoints if info.metrics is not None]
    return sorted(with_metrics, key=lambda info: metric_value(get_metric_fn, info),
                  reverse=reverse)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BestN:
    """Keeps the `n` best checkpoints by `get_metric_fn(metrics)` (all when n is None).

    `reverse=False`: larger is better; `reverse=True`: smaller is better (best_mode "min").
    Checkpoints saved without metrics are kept when `keep_checkpoints_without_metrics`.
    """

    get_metric_fn: Callable[[Mapping[str, Any]], Any]
    n: int | None = None
    reverse: bool = False
    keep_checkpoints_without_metrics: bool = True

    def __post_init__(self) -> None:
        if not callable(self.get_metric_fn):
            raise InvalidArgumentError(
                f"Expected BestN.get_metric_fn to be callable, got {self.get_metric_fn!r}. To "
                "fix, pass e.g. get_metric_fn=lambda metrics: metrics['loss']."
            )
        if self.n is not None:
            _count(self.n, what="BestN.n", minimum=0)

    def should_preserve(self, checkpoints: Sequence[CheckpointInfo], *,
                        context: PreservationContext) -> list[bool]:
        if self.n is None or len(checkpoints) <= self.n:
            return [True] * len(checkpoints)
        ranked = ranked_by_metric(checkpoints, self.get_metric_fn, reverse=self.reverse)
        kept = {info.step for info in ranked[-self.n:]} if self.n else set()
        if self.keep_checkpoints_without_metrics:
            kept |= {info.step for info in checkpoints if info.metrics is None}
        return [info.step in kept for info in checkpoints]


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnyPreservationPolicy:
    """Keeps a checkpoint when any of `policies` keeps it."""

    policies: Sequence[PreservationPolicy] = dataclasses.field(kw_only=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", require_policies(
            self.policies, method="should_preserve", kind="preservation", example="LatestN(3)"))

    def should_preserve(self, checkpoints: Sequence[CheckpointInfo], *,
                        context: PreservationContext) -> list[bool]:
        flags = [False] * len(checkpoints)
        for policy in self.policies:
            decided = list(policy.should_preserve(checkpoints, context=context))
            if len(decided) != len(checkpoints):
                raise InvalidArgumentError(
                    f"Expected {policy!r} to return one flag per checkpoint "
                    f"({len(checkpoints)}), got {len(decided)}. To fix the policy, return a "
                    "list as long as its checkpoints argument."
                )
            flags = [kept or bool(new) for kept, new in zip(flags, decided, strict=True)]
        return flags
