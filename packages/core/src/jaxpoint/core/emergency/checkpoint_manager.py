"""The emergency CheckpointManager: a local tier saved often, a persistent tier saved rarely.

Orbax's `experimental.emergency.checkpoint_manager.CheckpointManager`, with its names:
every process writes its own shards of every replica to its own local directory (a disk or a
RAM disk) by the local options' policy, and the run writes one copy of the state to shared
storage by the persistent options' policy (the core manager, each shard written once).
`restore()` agrees on the newest step that can be rebuilt: the newest local step whose
every shard survives on some process (the others receive theirs over the replica axis),
else the newest persistent step. JSON items travel in both tiers with the state.

Preemption (SIGTERM in one process, JAX's preemption sync point in several): the next
`save` writes a local checkpoint at that step on every process, whatever the intervals,
waits for it, and `reached_preemption(step)` tells the loop to stop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
from jaxpoint.core import multihost
from jaxpoint.core.emergency import persistent_reader
from jaxpoint.core.emergency.local_tier import LocalTier
from jaxpoint.core.emergency.options import (
    CheckpointManagerOptions,
    LocalCheckpointOptions,
    PersistentCheckpointOptions,
)
from jaxpoint.core.errors import InvalidArgumentError, StepNotFoundError
from jaxpoint.core.handlers import (
    Composite,
    JsonRestore,
    JsonSave,
    PyTreeRestore,
    PyTreeSave,
    StandardRestore,
    StandardSave,
)
from jaxpoint.core.manager.checkpoint_info import CheckpointInfo, as_step, utc_now
from jaxpoint.core.manager.manager import CheckpointManager as CoreCheckpointManager
from jaxpoint.core.manager.options import preservation_policy_for, save_decision_policy_for
from jaxpoint.core.manager.preemption_watch import PreemptionWatch, preemption_source_for
from jaxpoint.core.manager.preservation import PreservationContext
from jaxpoint.core.manager.save_decision import DecisionContext
from jaxpoint.core.storage import Location

logger = logging.getLogger(__name__)

# orbax's module `experimental.emergency.checkpoint_manager` serves the options too.
__all__ = ["CheckpointManager", "CheckpointManagerOptions", "LocalCheckpointOptions",
           "PersistentCheckpointOptions"]

PyTree = Any
STATE_ITEM = "state"
DATASET_ITEM = "dataset"
_RESERVED_ITEMS = (persistent_reader.STATE_ITEM, persistent_reader.METRICS_ITEM)
_SUPPORTED = "state=PyTreeSave/StandardSave and other items as JsonSave"


class CheckpointManager:
    """Local and persistent checkpoints of one sharded state; see the module docstring.

    Collective: every process calls the constructor, `save`, `should_save`,
    `reached_preemption`, `restore`, `delete`, `reload`, `wait_until_finished` and `close`,
    in the same order. `local_directory` is this process's own folder; `persistent_directory`
    is shared by all. `abstract_state`: the state's jax.ShapeDtypeStructs with shardings
    over `global_mesh`. `persistent_non_replicated_directory` with `item_handlers`: the item
    `dataset` is saved there by its handler (orbax's per-process data iterators).
    `preemption_source`: the core's seam (default: SIGTERM / JAX's sync point).
    """

    def __init__(self, local_directory: str | os.PathLike[str],
                 persistent_directory: str | os.PathLike[str], global_mesh: jax.sharding.Mesh,
                 abstract_state: PyTree, *, options: CheckpointManagerOptions | None = None,
                 metadata: Mapping[str, Any] | None = None, item_handlers: Any = None,
                 persistent_non_replicated_directory: str | os.PathLike[str] | None = None,
                 preemption_source: multihost.PreemptionSource | None = None) -> None:
        options = options or CheckpointManagerOptions()
        if not isinstance(options, CheckpointManagerOptions):
            raise InvalidArgumentError(
                f"Expected options to be jaxpoint.core.emergency.CheckpointManagerOptions, got "
                f"{type(options).__name__}. To fix, build it from the emergency module's "
                "LocalCheckpointOptions and PersistentCheckpointOptions.")
        if item_handlers is not None and persistent_non_replicated_directory is None:
            raise InvalidArgumentError(
                "Expected item_handlers only with persistent_non_replicated_directory (they "
                "save the 'dataset' item there), got item_handlers alone. To fix, pass "
                "persistent_non_replicated_directory=..., or save JSON items with JsonSave, "
                "which need no handler.")
        self._options = options
        self._abstract_state = abstract_state
        self._local_directory = local_directory
        self._persistent_directory = Location.parse(persistent_directory)
        local_core = options.local.core_options()
        self._local_save_policy = save_decision_policy_for(local_core)
        has_keep_policy = options.local.preservation_policy is not None
        self._local_keep_policy = preservation_policy_for(local_core) if has_keep_policy else None
        self._local = LocalTier(
            local_directory, global_mesh=global_mesh,
            replica_axis_index=options.replica_axis_index,
            max_to_keep=None if has_keep_policy else local_core.max_to_keep,
            step_name_format=options.step_name_format,
            enable_async_checkpointing=options.enable_async_checkpointing,
            async_options=options.async_options, timeout_s=options.coordination_timeout_s)
        persistent_options = options.persistent_core_options()
        self._name_format = persistent_options.name_format()
        self._persistent = CoreCheckpointManager(self._persistent_directory,
                                                 options=persistent_options, metadata=metadata)
        self._dataset: CoreCheckpointManager | None = None
        if persistent_non_replicated_directory is not None:
            self._dataset = CoreCheckpointManager(
                persistent_non_replicated_directory, options=persistent_options,
                item_handlers=item_handlers)
        # Local saves decided in this run (and the step restored): what the local policy sees.
        self._local_infos: list[CheckpointInfo] = []
        self._preemption = PreemptionWatch(
            preemption_source_for(preemption_source, handle_sigterm=True), is_enabled=True,
            wait_for_commit=self.wait_until_finished)
        self._is_closed = False

    # ------------------------------------------------------------------ properties

    @property
    def directory(self) -> Location:
        """The persistent directory (as orbax)."""
        return self._persistent_directory

    @property
    def global_mesh(self) -> jax.sharding.Mesh:
        return self._local.global_mesh

    @property
    def in_primary_slice(self) -> bool:
        """Whether this process holds devices of replica 0 (the one a persistent restore
        reads with `single_host_load_and_broadcast`). Every process writes both tiers."""
        devices = self.global_mesh.devices
        primary = devices.take(0, axis=self._options.replica_axis_index)
        return any(d.process_index == multihost.process_index() for d in primary.flat)

    # ------------------------------------------------------------------ steps

    def local_steps(self) -> list[int]:
        """This process's committed local steps (not collective)."""
        return self._local.local_steps()

    def persistent_steps(self) -> list[int]:
        return self._persistent.all_steps()

    def all_steps(self, read: bool = False) -> list[int]:
        """The persistent steps and this process's local steps, oldest first."""
        if read:
            self._persistent.reload()
        return sorted(set(self.local_steps()) | set(self.persistent_steps()))

    def latest_step(self) -> int | None:
        """The newest step of `all_steps()`; `restore()` agrees on what can be rebuilt."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The best persistent step by `PersistentCheckpointOptions.best_fn`."""
        return self._persistent.best_step()

    def metrics(self, step: int) -> dict[str, Any] | None:
        """The metrics saved with persistent step `step` (metrics live in that tier only)."""
        return self._persistent.metrics(step)

    def item_metadata(self, step: int) -> Composite:
        """Composite(state=tree metadata, <item>=...) of persistent step `step`, from files."""
        step = as_step(step)
        if step not in self.persistent_steps():
            raise StepNotFoundError(
                f"Expected step {step} in the persistent tier {self._persistent_directory} "
                f"(steps {self.persistent_steps()}), which holds the metadata; it is "
                f"{'only local' if step in self.local_steps() else 'in neither tier'}. To fix, "
                "ask for a persistent step; a local step has the abstract state's structure.")
        return persistent_reader.read_item_metadata(self._step_folder(step))

    def reload(self) -> None:
        """Re-reads the persistent steps (local steps are read from disk on every call)."""
        self._persistent.reload()
        if self._dataset is not None:
            self._dataset.reload()

    def _step_folder(self, step: int) -> Location:
        return self._persistent_directory / self._name_format.build_name(step)

    # ------------------------------------------------------------------ saving

    def reached_preemption(self, step: int) -> bool:
        """Collective. True once the job is being preempted: save this step and stop."""
        return self._preemption.asked_by_loop(as_step(step))

    def should_save(self, step: int) -> bool:
        """Collective. Whether `save(step)` would write to either tier."""
        step = as_step(step)
        self._preemption.stop_if_ignored(step)
        local, persistent, _ = self._decide(step, force=False)
        return local or persistent

    def _decide(self, step: int, *, force: bool) -> tuple[bool, bool, bool]:
        """(local save, persistent save, for a preemption), the same on every process."""
        latest_local = self._local_infos[-1].step if self._local_infos else None
        local = for_preemption = False
        if latest_local is None or step > latest_local:
            for_preemption = self._preemption.calls_for_save(step)
            context = DecisionContext(reached_preemption=for_preemption)
            # A preemption saves locally even under a custom policy that would not.
            local = for_preemption or bool(self._local_save_policy.should_save(
                CheckpointInfo(step=step, time=utc_now()), list(self._local_infos),
                context=context))
        persistent = self._persistent.should_save(step)
        decision = [local or force, persistent or force, for_preemption]
        if multihost.process_count() > 1:  # time-based policies may differ between hosts
            decision = multihost.broadcast_one_to_some(
                decision, is_source=multihost.process_index() == 0, processes=None,
                name="emergency-save-decision")
        return bool(decision[0]), bool(decision[1]), bool(decision[2])

    def save(self, step: int, args: Composite, *, force: bool = False,
             metrics: Mapping[str, Any] | None = None,
             custom_metadata: Mapping[str, Any] | None = None) -> bool:
        """Collective. Saves `args` (Composite(state=PyTreeSave(...), <item>=JsonSave(...)))
        to the tiers whose policy asks for `step` (both with `force=True`); returns whether
        any tier saved. `metrics` and `custom_metadata` go to the persistent tier."""
        step = as_step(step)
        self._preemption.stop_if_ignored(step)
        self.check_for_errors()
        state_args, items, dataset_args = self._split_save_args(args, step)
        local, persistent, for_preemption = self._decide(step, force=force)
        if local:
            self._prune_local()
            self._local.save(step, state_args.item, items)
            self._local_infos.append(CheckpointInfo(step=step, time=utc_now()))
            self._preemption.saved(step, for_preemption=for_preemption)
            if for_preemption:
                self._local.wait_until_finished()
                logger.info("Saved local step %d for a preemption in %s.", step,
                            self._local.directory)
        if persistent:
            composite = Composite(**{persistent_reader.STATE_ITEM: state_args},
                                  **{name: JsonSave(value) for name, value in items.items()})
            self._persistent.save(step, args=composite, force=True, metrics=metrics,
                                  custom_metadata=custom_metadata)
        if dataset_args is not None and self._dataset is not None:
            self._dataset.save(step, args=dataset_args, force=force or persistent)
        return local or persistent

    def _split_save_args(self, args: Any, step: int) -> tuple[Any, dict[str, Any], Any]:
        if not isinstance(args, Composite) or STATE_ITEM not in args:
            raise InvalidArgumentError(
                f"Expected args=Composite(state=PyTreeSave(state), ...) in save(step={step}), "
                f"got {type(args).__name__}{' without a state item' if isinstance(args, Composite) else ''}. "
                f"To fix, pass args=ocp.args.Composite(state=ocp.args.PyTreeSave(state)).")
        items: dict[str, Any] = {}
        dataset_args = None
        for name, item_args in args.items():
            if name == STATE_ITEM:
                continue
            if name == DATASET_ITEM and self._dataset is not None:
                dataset_args = item_args
            elif name in _RESERVED_ITEMS:
                raise InvalidArgumentError(
                    f"Item name {name!r} in save(step={step}) is reserved ({_RESERVED_ITEMS}: the "
                    "persistent tier stores the state as 'default', as orbax's emergency "
                    "manager, and metrics as 'metrics'). To fix, rename the item.")
            elif isinstance(item_args, JsonSave):
                items[name] = item_args.item
            else:
                raise self._unsupported(name, item_args, step)
        state_args = args[STATE_ITEM]
        if not isinstance(state_args, PyTreeSave | StandardSave):
            raise self._unsupported(STATE_ITEM, state_args, step)
        return state_args, items, dataset_args

    @staticmethod
    def _unsupported(name: str, item_args: Any, step: int) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"Expected {_SUPPORTED} in save(step={step}), got {type(item_args).__name__} for "
            f"item {name!r}. The local tier stores the state's shards and JSON values only. "
            "To fix, put arrays in the state and convert other values to JSON (JsonSave).")

    def _prune_local(self) -> None:
        """Applies the local preservation policy to the local steps saved in this run."""
        if self._local_keep_policy is None or not self._local_infos:
            return
        keep = list(self._local_keep_policy.should_preserve(self._local_infos,
                                                            context=PreservationContext()))
        doomed = [info.step for info, kept in zip(self._local_infos, keep, strict=True)
                  if not kept]
        for step in doomed:
            self._local.delete(step)
        self._local_infos = [i for i in self._local_infos if i.step not in doomed]

    # ------------------------------------------------------------------ restoring

    def restore(self, step: int | None = None, args: Composite | None = None) -> Composite:
        """Collective. Composite(state=..., <item>=...) of `step`, or of the newest step that
        can be rebuilt when None (every process agrees before reading anything).

        `args` may name the JSON items to restore (`<item>=JsonRestore()`) and give the
        state's target (`state=PyTreeRestore(abstract)`); by default everything is restored
        onto the constructor's `abstract_state`.
        """
        abstract, item_names, dataset_args = self._split_restore_args(args)
        self.wait_until_finished()
        local_step = self._local.agree_on_restorable_step()
        self._persistent.reload()
        persistent_steps = self._persistent.all_steps()
        resuming = step is None
        if step is None:
            step = self._newest(local_step, persistent_steps)
        step = as_step(step)
        if step == local_step:
            logger.info("Restoring step %d from the local tier (%s).", step,
                        self._local.directory)
            state, items = self._local.restore(step, abstract)
            missing = sorted(set(item_names or ()) - set(items))
            if missing:
                raise StepNotFoundError(
                    f"Expected item(s) {missing} in local step {step}, found {sorted(items)}. "
                    "To fix, restore the items saved with that step (args=None: all).")
            if item_names is not None:
                items = {name: items[name] for name in item_names}
        elif step in persistent_steps:
            logger.info("Restoring step %d from the persistent tier (%s)%s.", step,
                        self._persistent_directory,
                        "" if local_step is None else f"; the newest local step is {local_step}")
            state, items = persistent_reader.read_step(
                self._step_folder(step), abstract, item_names=item_names,
                single_replica=self._options.single_host_load_and_broadcast,
                replica_axis_index=self._options.replica_axis_index)
        else:
            raise StepNotFoundError(
                f"Expected step {step} to be restorable, but the local tier "
                f"({self._local_directory}) can rebuild {local_step} only and the persistent "
                f"tier ({self._persistent_directory}) holds {persistent_steps}. To fix, restore "
                "one of those steps, or step=None for the newest.")
        if resuming:
            self._forget_local_after(step)
        restored: dict[str, Any] = {STATE_ITEM: state, **items}
        if dataset_args is not None and self._dataset is not None:
            restored[DATASET_ITEM] = self._dataset.restore(step, args=dataset_args)
        return Composite(**restored)

    def _newest(self, local_step: int | None, persistent_steps: list[int]) -> int:
        persistent_step = persistent_steps[-1] if persistent_steps else None
        if local_step is None and persistent_step is None:
            raise StepNotFoundError(
                f"Expected a step to restore, found none: no local step can be rebuilt from "
                f"the local directories (this process's: {self._local_directory}) and the "
                f"persistent directory {self._persistent_directory} holds no step. To fix, "
                "check both paths, or start training from scratch.")
        if local_step is None:
            logger.info("No local step can be rebuilt on every process; using the newest "
                        "persistent step %s.", persistent_step)
        return max(s for s in (local_step, persistent_step) if s is not None)

    def _forget_local_after(self, step: int) -> None:
        """On resuming, local steps newer than the restored one (none of them rebuildable)
        belong to an abandoned future: they go, so that the run can save those steps again."""
        for newer in [s for s in self._local.local_steps() if s > step]:
            self._local.delete(newer)
        self._local_infos = [CheckpointInfo(step=step, time=utc_now())]

    def _split_restore_args(self, args: Any) -> tuple[Any, list[str] | None, Any]:
        if args is None:
            return self._abstract_state, None, None
        if not isinstance(args, Composite):
            raise InvalidArgumentError(
                f"Expected args=None or Composite(<item>=JsonRestore(), ...) in restore, got "
                f"{type(args).__name__}. To fix, pass None to restore the state and every item.")
        abstract, names, dataset_args = self._abstract_state, [], None
        for name, item_args in args.items():
            if name == STATE_ITEM and isinstance(item_args, PyTreeRestore | StandardRestore):
                if item_args.item is not None:
                    abstract = item_args.item
            elif name == DATASET_ITEM and self._dataset is not None:
                dataset_args = item_args
            elif isinstance(item_args, JsonRestore) and name != STATE_ITEM:
                names.append(name)
            else:
                raise InvalidArgumentError(
                    f"Expected state=PyTreeRestore/StandardRestore and other items as "
                    f"JsonRestore in restore, got {type(item_args).__name__} for item {name!r}. "
                    "To fix, restore arrays as part of the state.")
        return abstract, names, dataset_args

    # ------------------------------------------------------------------ the rest

    def delete(self, step: int) -> None:
        """Collective. Deletes `step` from both tiers (this process's local copy)."""
        step = as_step(step)
        in_persistent = step in self._persistent.all_steps()
        if not in_persistent and step not in self._local.local_steps():
            raise StepNotFoundError(
                f"Expected step {step} in {self._local_directory} or "
                f"{self._persistent_directory}, found steps {self.all_steps()}. To fix, delete "
                "one of those.")
        self._local.delete(step)
        self._local_infos = [i for i in self._local_infos if i.step != step]
        if in_persistent:
            self._persistent.delete(step)

    def wait_until_finished(self) -> None:
        """Blocks until the saves in flight of both tiers have committed."""
        self._local.wait_until_finished()
        self._prune_local()
        self._persistent.wait_until_finished()
        if self._dataset is not None:
            self._dataset.wait_until_finished()

    def check_for_errors(self) -> None:
        """Raises the failure of a finished background save of either tier, once."""
        self._local.check_for_errors()
        self._persistent.check_for_errors()
        if self._dataset is not None:
            self._dataset.check_for_errors()

    def close(self) -> None:
        """Waits for the saves in flight and closes both tiers; idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        try:
            self.wait_until_finished()
        finally:
            self._local.close()
            self._persistent.close()
            if self._dataset is not None:
                self._dataset.close()
            self._preemption.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

