"""Following a training run from another process: new steps as they commit, held while read.

`checkpoints_iterator(directory)` yields each newly committed step (jumping to the latest
when several arrived) and `wait_for_new_checkpoint(directory)` waits for one; both take a
read lease on the step they return (see leases.py), so a CheckpointManager in the
training process does not delete it until the caller moves on. Signatures follow Orbax's
`checkpoint_utils`, so evaluation loops written for it run unchanged.

    for step in checkpoints_iterator(directory, timeout=600):
        state = manager.restore(step)   # safe: step `step` is not deleted meanwhile
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator

import numpy as np
from jaxpoint.core import multihost
from jaxpoint.core.errors import InvalidArgumentError, StepNotFoundError
from jaxpoint.core.inspection import StepNameFormat, list_steps
from jaxpoint.core.inspection.step_names import name_format_for
from jaxpoint.core.manager.checkpoint_info import as_step
from jaxpoint.core.manager.leases import DEFAULT_LEASE_TTL_S, ReadLease
from jaxpoint.core.storage import Location

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str] | Location


def _name_format(step_prefix: str | None, step_format_fixed_length: int | None,
                 step_name_format: StepNameFormat | None) -> StepNameFormat:
    return name_format_for(step_prefix=step_prefix, step_format_fixed_length=step_format_fixed_length,
                           step_name_format=step_name_format)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _HeldStep:
    step: int
    lease: ReadLease | None  # None: leases were turned off (lease_ttl_s=None)

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()


def _take_newest(root: Location, name_format: StepNameFormat, until_step: int | None,
                 ttl_s: float | None) -> _HeldStep | None:
    """Leases the newest committed step >= until_step that no manager is deleting."""
    steps = list_steps(root, name_format=name_format).committed
    for step in sorted(steps, reverse=True):
        if until_step is not None and step < until_step:
            break
        if ttl_s is None:
            return _HeldStep(step=step, lease=None)
        lease = ReadLease(root, steps[step], ttl_s=ttl_s)
        if not lease.acquire():
            continue
        if step in list_steps(root, name_format=name_format).committed:  # not deleted just before the lease
            return _HeldStep(step=step, lease=lease)
        lease.release()
    return None


def _wait(root: Location, name_format: StepNameFormat, *, until_step: int | None,
          seconds_to_sleep: float, timeout: float | None,
          timeout_fn: Callable[[], bool] | None, ttl_s: float | None) -> _HeldStep | None:
    stop_at = None if timeout is None else time.monotonic() + timeout
    while True:
        held = _take_newest(root, name_format, until_step, ttl_s)
        if held is not None:
            return held
        if stop_at is not None and time.monotonic() + seconds_to_sleep > stop_at:
            if timeout_fn is None or timeout_fn():
                return None
        time.sleep(seconds_to_sleep)


def _check_wait_args(seconds_to_sleep: float, timeout: float | None, ttl_s: float | None,
                     *, ttl_may_be_none: bool = True) -> None:
    for name, value, allow_none in (("seconds_to_sleep", seconds_to_sleep, False),
                                    ("timeout", timeout, True),
                                    ("lease_ttl_s", ttl_s, ttl_may_be_none)):
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (
                name == "lease_ttl_s" and value == 0):
            raise InvalidArgumentError(
                f"Expected {name} to be a number of seconds >= 0 (> 0 for lease_ttl_s)"
                f"{' or None' if allow_none else ''}, got {value!r}."
            )


@contextlib.contextmanager
def wait_for_new_checkpoint(checkpoint_dir: PathLike, *, until_step: int | None = None,
                            seconds_to_sleep: float = 1, timeout: float | None = None,
                            timeout_fn: Callable[[], bool] | None = None,
                            step_prefix: str | None = None,
                            step_format_fixed_length: int | None = None,
                            step_name_format: StepNameFormat | None = None,
                            lease_ttl_s: float | None = DEFAULT_LEASE_TTL_S) -> Iterator[int]:
    """Collective: every process calls this, in the same order.

    Waits for a committed step >= `until_step` (any step when None) and yields the newest
    one, or -1 when `timeout` seconds pass (and `timeout_fn`, if given, returns True). The
    step is held against deletion until the `with` block ends (`lease_ttl_s=None` takes no
    lease, for storage the evaluator may not write to). With several processes, process 0
    looks and holds the lease, and tells the others the step.
    """
    _check_wait_args(seconds_to_sleep, timeout, lease_ttl_s)
    until_step = None if until_step is None else as_step(until_step, what="until_step")
    root = Location.parse(checkpoint_dir)
    name_format = _name_format(step_prefix, step_format_fixed_length, step_name_format)
    held = None
    if multihost.process_index() == 0:
        held = _wait(root, name_format, until_step=until_step, seconds_to_sleep=seconds_to_sleep,
                     timeout=timeout, timeout_fn=timeout_fn, ttl_s=lease_ttl_s)
    step = held.step if held is not None else -1
    if multihost.process_count() > 1:
        step = int(multihost.broadcast_one_to_all(np.int64(step)))
    try:
        yield step
    finally:
        if held is not None:
            held.release()


def checkpoints_iterator(checkpoint_dir: PathLike, *, min_interval_secs: float = 0,
                         seconds_to_sleep: float = 1, timeout: float | None = None,
                         timeout_fn: Callable[[], bool] | None = None,
                         step_prefix: str | None = None,
                         step_format_fixed_length: int | None = None,
                         step_name_format: StepNameFormat | None = None,
                         lease_ttl_s: float | None = DEFAULT_LEASE_TTL_S) -> Iterator[int]:
    """Collective: every process calls this, in the same order.

    Yields newly committed steps in increasing order, jumping to the newest when several
    arrived while the caller worked. Each step stays held against deletion until the
    caller asks for the next one (or stops iterating). Stops after `timeout` seconds
    without a new step, unless `timeout_fn` returns False.
    """
    last = None
    while True:
        until_step = None if last is None else last + 1
        with wait_for_new_checkpoint(
                checkpoint_dir, until_step=until_step, seconds_to_sleep=seconds_to_sleep,
                timeout=timeout, timeout_fn=timeout_fn, step_prefix=step_prefix,
                step_format_fixed_length=step_format_fixed_length,
                step_name_format=step_name_format, lease_ttl_s=lease_ttl_s) as step:
            if step == -1:
                if timeout_fn is None or timeout_fn():
                    return
                continue
            started, last = time.monotonic(), step
            yield step
        remaining = started + min_interval_secs - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)


@contextlib.contextmanager
def hold_read_lease(checkpoint_dir: PathLike, step: int, *, step_prefix: str | None = None,
                    step_format_fixed_length: int | None = None,
                    step_name_format: StepNameFormat | None = None,
                    lease_ttl_s: float = DEFAULT_LEASE_TTL_S) -> Iterator[int]:
    """Holds committed step `step` against deletion by managers while the block runs.

    Raises StepNotFoundError when the step is not committed or a manager is deleting it.
    """
    _check_wait_args(0, None, lease_ttl_s, ttl_may_be_none=False)
    step = as_step(step)
    root = Location.parse(checkpoint_dir)
    name_format = _name_format(step_prefix, step_format_fixed_length, step_name_format)
    steps = list_steps(root, name_format=name_format).committed
    if step not in steps:
        raise StepNotFoundError(
            f"Expected committed step {step} in {root}, found only steps {sorted(steps)}. To "
            "fix, pick one of those (and check step_prefix / step_format_fixed_length)."
        )
    lease = ReadLease(root, steps[step], ttl_s=lease_ttl_s)
    if not lease.acquire():
        raise StepNotFoundError(
            f"Step {step} in {root} is being deleted by a CheckpointManager, so it cannot be "
            "held for reading. To fix, read a newer step (see checkpoints_iterator)."
        )
    try:
        yield step
    finally:
        lease.release()
