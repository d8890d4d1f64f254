"""The one place jaxpoint reads JAX's private distributed state.

Why this shim exists: public JAX (0.10.2) offers `jax.distributed.initialize` but not the
coordination-service client that call creates, and jaxpoint needs that client for barriers
on process subsets and for its key-value store. Public `jax.experimental.multihost_utils`
only offers device collectives, which cannot wait on a subset of processes, cannot time out
and cannot say who is missing. Every `jax._src` access in jaxpoint lives in this module, so a
JAX upgrade that moves the client breaks exactly one file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

import jax

# Private: the client object is not exported by public JAX (see the module docstring).
from jax._src import distributed as _jax_distributed


class CoordinationClient(Protocol):
    """The part of JAX's coordination-service client that jaxpoint uses."""

    def wait_at_barrier(
        self, barrier_id: str, timeout_in_ms: int, process_ids: Sequence[int] | None = None
    ) -> None: ...

    def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None: ...

    def blocking_key_value_get(self, key: str, timeout_in_ms: int) -> str: ...

    def key_value_dir_get(self, key: str) -> list[tuple[str, str]]: ...

    def key_value_increment(self, key: str, increment: int) -> int: ...

    def key_value_delete(self, key: str) -> None: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class DistributedRuntime:
    """This process's view of a job joined with `jax.distributed.initialize`."""

    client: CoordinationClient
    process_id: int
    num_processes: int


def distributed_runtime() -> DistributedRuntime | None:
    """Returns the coordination-service view of this job, or None without `jax.distributed`."""
    state = _jax_distributed.global_state
    if state.client is None:
        return None
    return DistributedRuntime(
        client=state.client, process_id=state.process_id, num_processes=state.num_processes
    )


def is_deadline_exceeded(error: BaseException) -> bool:
    """Whether a coordination-service call failed because its timeout passed."""
    return isinstance(error, jax.errors.JaxRuntimeError) and str(error).startswith(
        "DEADLINE_EXCEEDED"
    )


def is_already_exists(error: BaseException) -> bool:
    """Whether a key-value write failed because the key was already set."""
    return isinstance(error, jax.errors.JaxRuntimeError) and str(error).startswith(
        "ALREADY_EXISTS"
    )
