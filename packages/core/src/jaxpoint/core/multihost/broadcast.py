"""Sending a value from one process to others.

Two tools for two jobs: `broadcast_one_to_all` moves arrays between every process as a
device collective (fast for big data, all processes, no timeout); `broadcast_one_to_some`
moves small JSON values through the coordination service's key-value store (any subset of
processes, bounded by a timeout, no compilation), e.g. a step number chosen by a primary.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any, TypeVar

from jax.experimental import multihost_utils
from jaxpoint.core.errors import BarrierTimeoutError, InvalidArgumentError
from jaxpoint.core.multihost import keyspace
from jaxpoint.core.multihost.barrier import release, validated_timeout_ms
from jaxpoint.core.multihost.processes import process_index, resolve_group
from jaxpoint.core.multihost.runtime import (
    distributed_runtime,
    is_already_exists,
    is_deadline_exceeded,
)

PyTree = TypeVar("PyTree")


def broadcast_one_to_all(value: PyTree, *, is_source: bool | None = None) -> PyTree:
    """Returns the source's pytree of arrays and scalars on every process.

    Collective: every process calls this, in the same order. Every process passes a tree
    of the same structure, shapes and dtypes; only the source's leaf values are kept. The
    source is process 0 unless `is_source` says otherwise (then exactly one process passes
    True). A device collective: it needs every process and cannot time out. Leaves come
    back as numpy arrays, also with a single process.
    """
    return multihost_utils.broadcast_one_to_all(value, is_source=is_source)


def broadcast_one_to_some(
    value: Any,
    *,
    is_source: bool,
    processes: Collection[int] | None,
    timeout_s: float = 300.0,
    name: str = "broadcast",
) -> Any:
    """Returns the source's JSON-serialisable `value` on every process in `processes`.

    Collective: every process calls this, in the same order. Only members of `processes`
    (all when None) call it, and exactly one of them passes `is_source=True`; the others'
    `value` is ignored. Every member, the source included, gets the value back through a
    JSON round trip, so all of them hold equal values (tuples become lists). Receivers raise
    `BarrierTimeoutError` when no value arrives within `timeout_s`.
    """
    keyspace.check_name("broadcast", name)
    what = f"broadcast {name!r}"
    group = resolve_group(processes, what=what)
    timeout_ms = validated_timeout_ms(timeout_s, what=what)
    if not isinstance(is_source, bool):
        raise InvalidArgumentError(
            f"Expected is_source to be a bool for {what}, got {is_source!r} on process "
            f"{process_index()}. To fix, pass True on exactly one member of {list(group.members)}."
        )
    text = encoded_json(value, what=what) if is_source else ""
    if len(group.members) == 1:
        if not is_source:
            raise InvalidArgumentError(
                f"Expected the only member of processes={list(group.members)} to be the source "
                f"of {what}, but process {process_index()} passed is_source=False. To fix, "
                "pass is_source=True, or add the source process to processes."
            )
        return json.loads(text)
    runtime = distributed_runtime()
    assert runtime is not None  # A group of several processes needs jax.distributed.
    prefix = keyspace.next_call_key("broadcast", name, group)
    value_key = f"{prefix}/value"
    if is_source:
        try:
            runtime.client.key_value_set(value_key, text)
        except Exception as error:
            if not is_already_exists(error):
                raise
            raise InvalidArgumentError(
                f"Expected exactly one source for {what} (id {prefix!r}) among processes "
                f"{list(group.members)}, but another process had already published a value "
                f"when process {runtime.process_id} tried to. To fix, pass is_source=True on "
                "one process only."
            ) from error
        return json.loads(text)
    try:
        text = runtime.client.blocking_key_value_get(value_key, timeout_ms)
    except Exception as error:
        if not is_deadline_exceeded(error):
            raise
        others = [p for p in group.members if p != runtime.process_id]
        raise BarrierTimeoutError(
            f"{what} (id {prefix!r}) timed out after {timeout_ms / 1000:g} s on process "
            f"{runtime.process_id}: expected one of processes {others} to pass is_source=True "
            "and publish a value, but none did. To fix, make sure exactly one member "
            "is the source and that it calls this collective in the same order as the others."
        ) from error
    release(runtime, prefix, readers=len(group.members) - 1)
    return json.loads(text)


def encoded_json(value: Any, *, what: str) -> str:
    """`value` as JSON text, or an error naming `what` and how to fix it."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(
            f"Expected a JSON-serialisable value for {what}, got {type(value).__name__} on "
            f"process {process_index()} ({error}). To fix, send plain dicts, lists, str, "
            "int, float, bool or None; use broadcast_one_to_all for arrays."
        ) from error
