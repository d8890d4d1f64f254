"""Barriers on JAX's coordination service that time out and say who is missing.

A barrier here is a coordination-service barrier, not a device collective: it works on any
subset of processes, costs no XLA compilation, and always returns or raises once its
timeout has passed (the service checks deadlines once a second, so up to a second later).
Before waiting, each process records its arrival in the key-value store; when the wait
times out, the arrivals tell which processes never came.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection

from jaxpoint.core.errors import BarrierTimeoutError, InvalidArgumentError
from jaxpoint.core.multihost import keyspace
from jaxpoint.core.multihost.processes import ProcessGroup, resolve_group
from jaxpoint.core.multihost.runtime import (
    DistributedRuntime,
    distributed_runtime,
    is_deadline_exceeded,
)

logger = logging.getLogger(__name__)


def sync_global_processes(
    name: str, *, processes: Collection[int] | None = None, timeout_s: float = 300.0
) -> None:
    """Blocks until every process in `processes` (all when None) reaches barrier `name`.

    Collective: every process calls this, in the same order. Only the listed processes
    call it; a process outside `processes` raises `InvalidArgumentError`. Raises
    `BarrierTimeoutError` naming the missing processes when they do not all arrive within
    `timeout_s`; the coordination service checks deadlines once a second, so that error
    comes up to about a second after `timeout_s`. Without `jax.distributed` it returns at
    once.
    """
    keyspace.check_name("barrier", name)
    what = f"barrier {name!r}"
    group = resolve_group(processes, what=what)
    timeout_ms = validated_timeout_ms(timeout_s, what=what)
    runtime = distributed_runtime()
    if runtime is None or len(group.members) == 1:
        return
    prefix = keyspace.next_call_key("barrier", name, group)
    rendezvous(runtime, prefix, group, payload="", timeout_ms=timeout_ms, what=what)
    # Everyone has arrived, so nobody reads the arrivals any more.
    runtime.client.key_value_delete(keyspace.arrival_key(prefix, runtime.process_id))


def validated_timeout_ms(timeout_s: float, *, what: str) -> int:
    """Checks a timeout in seconds and converts it to the service's milliseconds."""
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, (int, float))
        or not math.isfinite(timeout_s)
        or timeout_s <= 0
    ):
        raise InvalidArgumentError(
            f"Expected timeout_s to be a finite number of seconds > 0 for {what}, got "
            f"{timeout_s!r}. To fix, pass e.g. timeout_s=300.0."
        )
    return max(1, round(timeout_s * 1000))


def rendezvous(
    runtime: DistributedRuntime,
    prefix: str,
    group: ProcessGroup,
    *,
    payload: str,
    timeout_ms: int,
    what: str,
) -> None:
    """Records this process's arrival (with `payload`) at `prefix`, then waits for the group.

    Raises `BarrierTimeoutError` naming the processes that never recorded their arrival.
    """
    started = time.monotonic()
    client = runtime.client
    client.key_value_set(keyspace.arrival_key(prefix, runtime.process_id), payload)
    remaining_ms = max(1, timeout_ms - round((time.monotonic() - started) * 1000))
    try:
        client.wait_at_barrier(prefix, remaining_ms, group.process_ids)
    except Exception as error:
        if not is_deadline_exceeded(error):
            raise
        raise _timeout_error(runtime, prefix, group, timeout_ms=timeout_ms, what=what) from error
    logger.debug("%s passed on process %d in %.3f s (id %s)", what, runtime.process_id,
                 time.monotonic() - started, prefix)


def read_arrivals(runtime: DistributedRuntime, prefix: str) -> dict[int, str]:
    """The payload each process recorded on arrival at `prefix`, by process index."""
    entries = runtime.client.key_value_dir_get(keyspace.arrivals_dir(prefix))
    return {keyspace.process_of_arrival(key): value for key, value in entries}


def release(runtime: DistributedRuntime, prefix: str, *, readers: int) -> None:
    """Says this process is done with the keys at `prefix`; the last of `readers` deletes them."""
    done = runtime.client.key_value_increment(keyspace.acknowledgements_key(prefix), 1)
    if done == readers:
        runtime.client.key_value_delete(prefix)


def _timeout_error(
    runtime: DistributedRuntime, prefix: str, group: ProcessGroup, *, timeout_ms: int, what: str
) -> BarrierTimeoutError:
    arrived = read_arrivals(runtime, prefix)
    missing = [p for p in group.members if p not in arrived]
    head = (
        f"{what} (id {prefix!r}) timed out after {timeout_ms / 1000:g} s on process "
        f"{runtime.process_id}: expected processes {list(group.members)} to arrive, "
    )
    if not missing:
        return BarrierTimeoutError(
            head + f"and all of them did, but not within {timeout_ms / 1000:g} s of the first "
            f"arrival, so the barrier had already failed when process {runtime.process_id} "
            "arrived. To fix, raise timeout_s or find what delayed this process."
        )
    # Not refined with client.get_live_nodes: that call waits for every live listed
    # process to make it too, so it would hang on a peer that is merely slow.
    return BarrierTimeoutError(
        head + f"but process(es) {missing} never arrived. To fix, check the logs of "
        f"process(es) {missing} for an error or a crash; make sure every listed process "
        "calls this collective in the same order; if they are only slow, raise timeout_s."
    )
