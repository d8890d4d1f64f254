"""Options shared by checkpointers and the manager."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from jaxpoint.core.errors import InvalidArgumentError


@dataclasses.dataclass(frozen=True, kw_only=True)
class MultiprocessingOptions:
    """Which process commits, and which processes take part.

    `primary_host=None`: every process writes and commits its own files (local storage
    per host). `active_processes`: the subset of processes that save (all when None).
    """

    primary_host: int | None = 0
    active_processes: Collection[int] | None = None
    barrier_sync_key_prefix: str | None = None
    barrier_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.active_processes is not None:
            members = sorted(set(self.active_processes))
            object.__setattr__(self, "active_processes", tuple(members))
            if self.primary_host is not None and self.primary_host not in members:
                raise InvalidArgumentError(
                    f"Expected primary_host in active_processes {members}, got "
                    f"{self.primary_host}. To fix, pick a primary among the active processes."
                )
        if self.barrier_timeout_s <= 0:
            raise InvalidArgumentError(
                f"Expected barrier_timeout_s > 0, got {self.barrier_timeout_s}."
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class AsyncOptions:
    """`timeout_secs`: how long the background write and its barriers may take."""

    timeout_secs: float = 600.0
    post_finalization_callback: object | None = None
    create_directories_asynchronously: bool = False

    def __post_init__(self) -> None:
        if self.create_directories_asynchronously:
            raise InvalidArgumentError(
                "Expected AsyncOptions(create_directories_asynchronously=False), got True. "
                "Creating step folders in the background is not supported here: save() "
                "creates them before it returns, which costs one mkdir per item. To fix, "
                "drop create_directories_asynchronously=True."
            )
