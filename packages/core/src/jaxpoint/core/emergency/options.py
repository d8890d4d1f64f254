"""Options of the emergency CheckpointManager, with orbax's names and defaults.

`CheckpointManagerOptions(local=LocalCheckpointOptions(...), persistent=
PersistentCheckpointOptions(...), ...)` reads as in `orbax.checkpoint.experimental.emergency`.
Each tier's options are turned into the core manager's options (`core_options`), so they
are validated, and select save and keep policies, exactly as the core manager's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from jaxpoint.core.checkpointers.options import AsyncOptions
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.inspection.step_names import StepNameFormat
from jaxpoint.core.manager import options as manager_options
from jaxpoint.core.manager.preservation import PreservationPolicy
from jaxpoint.core.manager.save_decision import SaveDecisionPolicy


def _saving(interval: int | None, should_save_fn: Any, policy: Any) -> dict[str, Any]:
    # Orbax ignores the interval once a function or a policy decides; the core refuses the
    # combination, so the interval is left out exactly when orbax would ignore it.
    replaced = should_save_fn is not None or policy is not None
    return {"save_interval_steps": None if replaced else interval,
            "should_save_fn": should_save_fn, "save_decision_policy": policy}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalCheckpointOptions:
    """When each process writes its local checkpoint, and how many it keeps.

    `save_interval_steps` (default 10, as orbax), `should_save_fn(step, last_step)` or a
    `save_decision_policy` decide; a preemption always saves. `max_to_keep` (None: 1, as
    orbax) or a `preservation_policy` decide which local steps stay.
    """

    save_interval_steps: int = 10
    max_to_keep: int | None = None
    should_save_fn: Callable[[int, int | None], bool] | None = None
    save_decision_policy: SaveDecisionPolicy | None = None
    preservation_policy: PreservationPolicy | None = None

    def __post_init__(self) -> None:
        self.core_options()  # validates every field

    def core_options(self) -> manager_options.CheckpointManagerOptions:
        """The same choices as core manager options (policies come from there)."""
        keep = self.max_to_keep
        if keep is None and self.preservation_policy is None:
            keep = 1
        return manager_options.CheckpointManagerOptions(
            **_saving(self.save_interval_steps, self.should_save_fn, self.save_decision_policy),
            max_to_keep=keep, preservation_policy=self.preservation_policy)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PersistentCheckpointOptions:
    """When the shared (persistent) checkpoint is written, and which steps are kept there.

    As orbax: `save_interval_steps` (default 1000), `should_save_fn`, `save_decision_policy`;
    `max_to_keep` (None: all), `keep_period`, `preservation_policy`. Beyond orbax:
    `best_fn(metrics)` and `best_mode` ("max"/"min") rank steps saved with `metrics=`,
    as in the core manager; `best_step()` reads them.
    """

    save_interval_steps: int = 1000
    max_to_keep: int | None = None
    keep_period: int | None = None
    should_save_fn: Callable[[int, int | None], bool] | None = None
    save_decision_policy: SaveDecisionPolicy | None = None
    preservation_policy: PreservationPolicy | None = None
    best_fn: Callable[[Mapping[str, Any]], Any] | None = None
    best_mode: str = "max"

    def __post_init__(self) -> None:
        self.core_options()

    def core_options(self, **shared: Any) -> manager_options.CheckpointManagerOptions:
        """Core manager options for the persistent tier, plus the `shared` ones."""
        return manager_options.CheckpointManagerOptions(
            **_saving(self.save_interval_steps, self.should_save_fn, self.save_decision_policy),
            max_to_keep=self.max_to_keep, keep_period=self.keep_period,
            preservation_policy=self.preservation_policy, best_fn=self.best_fn,
            best_mode=self.best_mode, **shared)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MultiprocessingOptions:
    """`coordination_timeout_secs`: how long a recovery waits for the slowest process."""

    coordination_timeout_secs: int = 120

    def __post_init__(self) -> None:
        value = self.coordination_timeout_secs
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidArgumentError(
                f"Expected MultiprocessingOptions.coordination_timeout_secs > 0, got {value!r}. "
                "To fix, pass more seconds than the slowest process takes to read its local step.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointManagerOptions:
    """Options of the emergency CheckpointManager (orbax's names).

    `replica_axis_index`: the mesh axis along which the state is replicated.
    `step_name_format`: step folder names in both tiers (default: the step number).
    `cleanup_tmp_directories`: remove unfinished saves in the persistent directory at start
    (the local tier always removes its own). `enable_async_checkpointing` / `async_options`:
    both tiers. `single_host_load_and_broadcast` (default True, as orbax): a persistent
    restore is read by one replica and broadcast to the others over the replica axis;
    False: every process reads its own shards from storage.
    """

    local: LocalCheckpointOptions = dataclasses.field(default_factory=LocalCheckpointOptions)
    persistent: PersistentCheckpointOptions = dataclasses.field(
        default_factory=PersistentCheckpointOptions)
    replica_axis_index: int = 0
    step_name_format: StepNameFormat | None = None
    cleanup_tmp_directories: bool = False
    enable_async_checkpointing: bool = True
    async_options: AsyncOptions | None = None
    multiprocessing_options: MultiprocessingOptions | None = None
    single_host_load_and_broadcast: bool = True

    def __post_init__(self) -> None:
        for name, kind in (("local", LocalCheckpointOptions),
                           ("persistent", PersistentCheckpointOptions),
                           ("multiprocessing_options", MultiprocessingOptions | None)):
            if not isinstance(getattr(self, name), kind):
                raise InvalidArgumentError(
                    f"Expected CheckpointManagerOptions.{name} to be a {kind}, got "
                    f"{type(getattr(self, name)).__name__}. To fix, pass the emergency "
                    f"module's {name} options class (jaxpoint.core.emergency).")
        for name in ("cleanup_tmp_directories", "enable_async_checkpointing",
                     "single_host_load_and_broadcast"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(
                    f"Expected CheckpointManagerOptions.{name} to be a bool, got "
                    f"{getattr(self, name)!r}. To fix, pass True or False.")
        index = self.replica_axis_index
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InvalidArgumentError(
                f"Expected CheckpointManagerOptions.replica_axis_index to be an int >= 0, got "
                f"{index!r}. To fix, pass the index of the mesh axis that holds the replicas.")
        self.persistent_core_options()

    def persistent_core_options(self) -> manager_options.CheckpointManagerOptions:
        # The local tier answers preemption; the shared tier keeps to its own schedule.
        return self.persistent.core_options(
            step_name_format=self.step_name_format,
            cleanup_tmp_directories=self.cleanup_tmp_directories,
            enable_async_checkpointing=self.enable_async_checkpointing,
            async_options=self.async_options, handle_sigterm=False)

    @property
    def coordination_timeout_s(self) -> float:
        return float((self.multiprocessing_options or MultiprocessingOptions())
                     .coordination_timeout_secs)
