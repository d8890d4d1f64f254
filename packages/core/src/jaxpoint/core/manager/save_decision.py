"""Save-decision policies: whether `manager.save(step)` writes a checkpoint at this step.

A policy is any object with `should_save(step, previous_steps, *, context) -> bool`
(the signature Orbax's policies have, so custom ones port unchanged). Combine them with
`AnySavePolicy`. The flat options of CheckpointManagerOptions map onto these: see
`options.save_decision_policy_for`.

    >>> policy = AnySavePolicy([FixedIntervalPolicy(100), SpecificStepsPolicy({150})])
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Collection, Sequence
from typing import Protocol, runtime_checkable

from jaxpoint.core import multihost
from jaxpoint.core.checkpointers import MultiprocessingOptions
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.manager.checkpoint_info import CheckpointInfo, as_step
from jaxpoint.core.validation import require_policies, require_positive_int


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecisionContext:
    """What the manager knows beyond the steps: a save in flight, preemption, processes."""

    is_saving_in_progress: bool = False
    reached_preemption: bool = False
    multiprocessing_options: MultiprocessingOptions = dataclasses.field(
        default_factory=MultiprocessingOptions)


@runtime_checkable
class SaveDecisionPolicy(Protocol):
    """Decides whether to save at `step`; `previous_steps` are the kept checkpoints, oldest first.

    Collective: the manager calls it on every process, in the same order, with the same
    steps; a policy must decide the same everywhere (see ContinuousCheckpointingPolicy).
    """

    def should_save(self, step: CheckpointInfo, previous_steps: Sequence[CheckpointInfo], *,
                    context: DecisionContext) -> bool: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class FixedIntervalPolicy:
    """Saves at every multiple of `interval` (steps 0, interval, 2*interval, ...)."""

    interval: int = dataclasses.field(kw_only=False)

    def __post_init__(self) -> None:
        require_positive_int(self.interval, what="FixedIntervalPolicy.interval",
                             fix="pass a positive number of steps")

    def should_save(self, step: CheckpointInfo, previous_steps: Sequence[CheckpointInfo], *,
                    context: DecisionContext) -> bool:
        return step.step % self.interval == 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpecificStepsPolicy:
    """Saves at exactly the listed steps."""

    steps: Collection[int] = dataclasses.field(kw_only=False)

    def __post_init__(self) -> None:
        if isinstance(self.steps, str | bytes) or not isinstance(self.steps, Collection):
            raise InvalidArgumentError(
                f"Expected steps to be a collection of ints, got {self.steps!r}. To fix, pass "
                "e.g. SpecificStepsPolicy({100, 250})."
            )
        steps = frozenset(as_step(s, what="step in SpecificStepsPolicy.steps") for s in self.steps)
        object.__setattr__(self, "steps", steps)

    def should_save(self, step: CheckpointInfo, previous_steps: Sequence[CheckpointInfo], *,
                    context: DecisionContext) -> bool:
        return step.step in self.steps


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreemptionCheckpointingPolicy:
    """Saves when the job is being preempted (`multihost.reached_preemption(step)`)."""

    def should_save(self, step: CheckpointInfo, previous_steps: Sequence[CheckpointInfo], *,
                    context: DecisionContext) -> bool:
        return context.reached_preemption


@dataclasses.dataclass(frozen=True, kw_only=True)
class InitialSavePolicy:
    """Saves the first step seen when the directory holds no checkpoint yet."""

    def should_save(self, step: CheckpointInfo, previous_steps: Sequence[CheckpointInfo], *,
                    context: DecisionContext) -> bool:
        return not previous_steps


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContinuousCheckpointingPolicy:
    """Saves whenever no save is in flight, at most once per `minimum_interval_secs`.

    The time-based decision could differ between processes, so with several processes
    the primary decides and tells the others (a small coordination-service broadcast).
    """

    minimum_interval_secs: float | None = None

    def __post_init__(self) -> None:
        interval = self.minimum_interval_secs
        if interval is not None and (isinstance(interval, bool)
                                     or not isinstance(interval, int | float) or interval < 0):
            raise InvalidArgumentError(
                f"Expected minimum_interval_secs to be a number >= 0 or None, got {interval!r}."
            )

    def _decide(self, step: CheckpointInfo, previous_steps: Sequence[CheckpointInfo],
                context: DecisionContext) -> bool:
        if context.is_saving_in_progress:
            return False
        if not previous_steps or self.minimum_interval_secs is None:
            return True
        elapsed = step.time - previous_steps[-1].time
        return elapsed >= datetime.timedelta(seconds=self.minimum_interval_secs)

    def should_save(self, step: CheckpointInfo, previous_steps: Sequence[CheckpointInfo], *,
                    context: DecisionContext) -> bool:
        decision = self._decide(step, previous_steps, context)
        options = context.multiprocessing_options
        if multihost.process_count() == 1 or options.primary_host is None:
            return decision
        return bool(multihost.broadcast_one_to_some(
            decision, is_source=multihost.is_primary_host(options.primary_host),
            processes=options.active_processes, timeout_s=options.barrier_timeout_s,
            name="manager/continuous-save-decision"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShouldSaveFnPolicy:
    """Saves when `should_save_fn(step, last_saved_step_or_None)` returns True."""

    should_save_fn: Callable[[int, int | None], bool] = dataclasses.field(kw_only=False)

    def __post_init__(self) -> None:
        if not callable(self.should_save_fn):
            raise InvalidArgumentError(
                f"Expected should_save_fn to be callable(step, last_step), got "
                f"{self.should_save_fn!r}."
            )

    def should_save(self, step: CheckpointInfo, previous_steps: Sequence[CheckpointInfo], *,
                    context: DecisionContext) -> bool:
        last = previous_steps[-1].step if previous_steps else None
        return bool(self.should_save_fn(step.step, last))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnySavePolicy:
    """Saves when any of `policies` says so. Every policy is asked, so collective ones
    (ContinuousCheckpointingPolicy) run on every process in the same order."""

    policies: Sequence[SaveDecisionPolicy] = dataclasses.field(kw_only=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policies", require_policies(
            self.policies, method="should_save", kind="save-decision",
            example="FixedIntervalPolicy(100)"))

    def should_save(self, step: CheckpointInfo, previous_steps: Sequence[CheckpointInfo], *,
                    context: DecisionContext) -> bool:
        decisions = [bool(p.should_save(step, previous_steps, context=context))
                     for p in self.policies]
        return any(decisions)
