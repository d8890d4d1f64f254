"""Agreeing on success, so that one process's failure stops every process.

When one process fails mid-save and the others carry on to the next barrier, they wait
there until it times out, or forever (the Orbax deadlock, google/orbax#3181). Instead,
every process reports its outcome at an agreement point and, if any report is a failure,
every process raises the same `ProcessFailureError` there, naming who failed and why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection

from jaxpoint.core.errors import InvalidArgumentError, ProcessFailureError
from jaxpoint.core.multihost import keyspace
from jaxpoint.core.multihost.barrier import read_arrivals, release, rendezvous, validated_timeout_ms
from jaxpoint.core.multihost.processes import process_index, resolve_group
from jaxpoint.core.multihost.runtime import distributed_runtime

logger = logging.getLogger(__name__)

# Keeps reports small in the key-value store; the full traceback stays in the failing log.
_MAX_REPORTED_CHARS = 2000


def agree_on_success(
    outcome: bool | BaseException,
    *,
    name: str,
    processes: Collection[int] | None = None,
    timeout_s: float = 300.0,
) -> None:
    """Returns if every process in `processes` succeeded; otherwise raises on all of them.

    Collective: every process calls this, in the same order. `outcome` is True for
    success, or the exception (or False) this process failed with. If any member failed,
    every member raises `ProcessFailureError` naming the failed processes and their
    messages, chained to the local exception where there is one. Raises
    `BarrierTimeoutError` naming the processes that never reported within `timeout_s`.

    >>> agree_on_success(True, name="save/write")  # one process: returns at once
    """
    keyspace.check_name("agreement", name)
    what = f"agreement {name!r}"
    group = resolve_group(processes, what=what)
    timeout_ms = validated_timeout_ms(timeout_s, what=what)
    report = _report(outcome, what=what)
    runtime = distributed_runtime()
    if runtime is None or len(group.members) == 1:
        reports = {process_index(): report}
    else:
        prefix = keyspace.next_call_key("agreement", name, group)
        rendezvous(runtime, prefix, group, payload=report, timeout_ms=timeout_ms, what=what)
        reports = read_arrivals(runtime, prefix)
        release(runtime, prefix, readers=len(group.members))
    errors = {process: json.loads(text)["error"] for process, text in sorted(reports.items())}
    failures = {process: error for process, error in errors.items() if error is not None}
    if not failures:
        return
    logger.warning("%s: process(es) %s failed: %s", what, list(failures), failures)
    cause = outcome if isinstance(outcome, BaseException) else None
    raise _failure_error(failures, members=list(group.members), what=what) from cause


def _report(outcome: bool | BaseException, *, what: str) -> str:
    if outcome is True:
        error = None
    elif outcome is False:
        error = "failed without an exception (outcome=False)"
    elif isinstance(outcome, BaseException):
        error = f"{type(outcome).__name__}: {outcome}"[:_MAX_REPORTED_CHARS]
    else:
        raise InvalidArgumentError(
            f"Expected outcome to be True, False or an exception for {what}, got "
            f"{outcome!r} of type {type(outcome).__name__} on process {process_index()}. "
            "To fix, pass True on success and the caught exception on failure."
        )
    return json.dumps({"error": error})


def _failure_error(
    failures: dict[int, str], *, members: list[int], what: str
) -> ProcessFailureError:
    failed = list(failures)
    details = "; ".join(f"process {p}: {message}" for p, message in failures.items())
    return ProcessFailureError(
        f"Expected every process in {members} to succeed at {what}, but process(es) "
        f"{failed} failed ({details}). Process {process_index()} raises this too, so that "
        f"no process waits forever at a later barrier. To fix, read the log of process(es) "
        f"{failed} for the original traceback.",
        failures=failures,
    )
