"""One preemption, as a manager sees it: one checkpoint for it, then the job stops.

A SIGTERM handler that only sets a flag would keep a job alive that never asks
`reached_preemption`: it could not be stopped with `kill` and would keep writing while
its replacement starts on the same directory. So, once the preemption checkpoint has
committed, a loop that goes on to the next `save()` / `should_save()` without having
asked `manager.reached_preemption(step)` gets a warning and the signal's usual effect
(the process ends). A loop that asks keeps full control. Only one save is made per
preemption, never one per step after it. A save policy that makes no preemption save
(a custom `save_decision_policy` without `PreemptionCheckpointingPolicy`) does not keep
the job alive either: the loop's next call for a later step ends it the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.multihost import PreemptionSource, default_preemption_source

logger = logging.getLogger(__name__)


class PreemptionWatch:
    """Tracks one preemption for one manager; see the module docstring."""

    def __init__(self, source: PreemptionSource, *, is_enabled: bool,
                 wait_for_commit: Callable[[], None]) -> None:
        self._source = source
        self._wait_for_commit = wait_for_commit
        self._is_listening = is_enabled and source.hold()
        self._is_acknowledged = False  # the loop asked reached_preemption and heard True
        self._saved_step: int | None = None  # the preemption checkpoint, once saved
        self._noticed_step: int | None = None  # the first step decided after the notice

    def asked_by_loop(self, step: int) -> bool:
        """`manager.reached_preemption(step)`: the loop knows about preemption."""
        if not self._is_listening:
            return False
        reached = self._source.reached_preemption(step)
        self._is_acknowledged = self._is_acknowledged or reached
        return reached

    def calls_for_save(self, step: int) -> bool:
        """Whether `step` should be saved for a preemption (once per preemption)."""
        if not self._is_listening or self._saved_step is not None:
            return False
        reached = self._source.reached_preemption(step)
        if reached and self._noticed_step is None:
            self._noticed_step = step
        return reached

    def saved(self, step: int, *, for_preemption: bool) -> None:
        if for_preemption and self._saved_step is None:
            self._saved_step = step

    def stop_if_ignored(self, step: int) -> None:
        """At the loop's next save()/should_save(): end a job that ignored the preemption."""
        if self._is_acknowledged:
            return
        if self._saved_step is not None:
            what = f"Step {self._saved_step} was saved for a preemption (SIGTERM)"
        elif self._noticed_step is not None and step > self._noticed_step:
            what = (f"A preemption (SIGTERM) was noticed at step {self._noticed_step} and the "
                    "save policy made no checkpoint for it")
        else:
            return
        self._wait_for_commit()
        logger.warning(
            "%s, but the training loop went on without asking "
            "manager.reached_preemption(step), so the process now ends as SIGTERM would "
            "without jaxpoint. To stop cleanly instead, break out of the loop when "
            "manager.reached_preemption(step) is True.", what)
        self._saved_step = self._noticed_step = None
        self._source.stop_process()

    def close(self) -> None:
        if self._is_listening:
            self._is_listening = False
            self._source.release()


def preemption_source_for(given: PreemptionSource | None, *,
                          handle_sigterm: bool) -> PreemptionSource:
    """The source a manager listens to: `given`, else the process-wide default.

    `handle_sigterm=False` turns preemption off, so a source given with it would be
    ignored: that combination is refused rather than accepted and dropped.
    """
    if given is None:
        return default_preemption_source()
    if not handle_sigterm:
        raise InvalidArgumentError(
            f"Expected either preemption_source=... or handle_sigterm=False, got both "
            f"(preemption_source={type(given).__name__}); handle_sigterm=False turns "
            "preemption off, so the source would be ignored. To fix, drop one of them.")
    if not isinstance(given, PreemptionSource):
        raise InvalidArgumentError(
            f"Expected preemption_source to be a multihost.PreemptionSource (hold, release, "
            f"reached_preemption, stop_process), got {type(given).__name__}. To fix, "
            "implement that protocol, or pass None for the SIGTERM default.")
    return given
