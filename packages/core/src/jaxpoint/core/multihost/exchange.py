"""Every process telling every other one a small value: an all-gather of JSON.

Through the coordination service's key-value store, like `agree_on_success` (which is an
exchange of outcomes): no device collective, no compilation, bounded by a timeout. For
facts each process knows alone, e.g. which checkpoint steps its local disk holds.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from jaxpoint.core.multihost import keyspace
from jaxpoint.core.multihost.barrier import read_arrivals, release, rendezvous, validated_timeout_ms
from jaxpoint.core.multihost.broadcast import encoded_json
from jaxpoint.core.multihost.processes import process_index, resolve_group
from jaxpoint.core.multihost.runtime import distributed_runtime


def gather_from_all(value: Any, *, name: str, processes: Collection[int] | None = None,
                    timeout_s: float = 300.0) -> dict[int, Any]:
    """Returns every member's JSON-serialisable `value`, by process index, on every member.

    Collective: every process calls this, in the same order. Only members of `processes`
    (all when None) call it. Values go through a JSON round trip (tuples become lists,
    dict keys strings). Raises `BarrierTimeoutError` naming the processes that never
    arrived within `timeout_s`.

    >>> gather_from_all({"steps": [1, 2]}, name="local-steps")  # one process
    {0: {'steps': [1, 2]}}
    """
    what = f"exchange {name!r}"
    keyspace.check_name("exchange", name)
    group = resolve_group(processes, what=what)
    timeout_ms = validated_timeout_ms(timeout_s, what=what)
    text = encoded_json(value, what=what)
    runtime = distributed_runtime()
    if runtime is None or len(group.members) == 1:
        return {process_index(): json.loads(text)}
    prefix = keyspace.next_call_key("exchange", name, group)
    rendezvous(runtime, prefix, group, payload=text, timeout_ms=timeout_ms, what=what)
    arrivals = read_arrivals(runtime, prefix)
    release(runtime, prefix, readers=len(group.members))
    return {process: json.loads(arrivals[process]) for process in sorted(arrivals)}
