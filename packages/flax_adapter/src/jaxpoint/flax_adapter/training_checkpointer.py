"""`attach(trainer, directory)`: a training-loop callback that saves, resumes and stops.

The callback owns a `CheckpointManager` and nothing else: the manager's policy decides
when to save and what to keep, its preemption check decides when to stop, and its
`close()` (or its own hook at interpreter exit) waits for the save in flight. No signal
or exit handler is installed here. Items on disk: `state` (the trainer's state),
one JSON item per extra item, and `config` (an `ml_collections.ConfigDict` as JSON).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import jaxpoint.core as ocp
from jaxpoint.core import args as ocp_args
from jaxpoint.core import multihost
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.flax_adapter import nnx_optimizer_change, nnx_state, optimizer_change
from jaxpoint.flax_adapter.state_binding import StateBinding

logger = logging.getLogger(__name__)

_STATE = "state"
_CONFIG = "config"
_HOOK_LISTS = ("callbacks", "hooks")


class TrainingCheckpointer:
    """Saves a trainer's state by the manager's policy; stops cleanly on preemption.

    Call order: `attach` builds it and restores the latest step; then once per step
    `on_step_end(step, metrics)` (or `ckpt(step)`), breaking out when `should_stop`;
    then `close()` (or leave the `with` block; interpreter exit also closes it).
    With several processes every process makes the same calls in the same order.
    """

    def __init__(self, trainer: Any, manager: ocp.CheckpointManager, *,
                 items: Mapping[str, Callable[[], Any]], config: Any,
                 optimizer_changed: str = "raise") -> None:
        self._trainer = trainer
        self._binding = StateBinding(trainer)
        self._manager = manager
        self._items = dict(items)
        self._config = config
        self._optimizer_changed = optimizer_change.validated_choice(optimizer_changed)
        self.restored_step: int | None = None
        self.restored_items: dict[str, Any] = {}
        self.restored_config: Any = None
        self.should_stop = False
        self._is_closed = False

    @property
    def manager(self) -> ocp.CheckpointManager:
        return self._manager

    def restore(self, step: int | None = None) -> int | None:
        """Collective. Restores `step` (the latest when None) into the trainer.

        Returns the restored step, or None when the directory holds no step yet.
        """
        step = self._manager.latest_step() if step is None else step
        if step is None:
            return None
        metadata = self._manager.item_metadata(step)
        on_disk = set(metadata.keys())
        saved = metadata[_STATE]
        live = self._binding.target(saved)
        if self._binding.is_nnx:
            state_args, finish = self._nnx_request(saved, live)
        elif optimizer_change.has_changed_optimizer(saved, live):
            if self._optimizer_changed == "raise":
                optimizer_change.raise_for_changed_optimizer(saved, live)
            state_args, finish = self._changed_optimizer_request(saved, live)
        else:
            # The core restores a Python scalar as the target asks (and the other way).
            state_args, finish = ocp_args.StandardRestore(live), _unchanged
        wanted = [*self._items] + ([_CONFIG] if self._config is not None else [])
        _log_item_differences(step, wanted, on_disk)
        names: dict[str, Any] = {_STATE: state_args}
        names.update({name: ocp_args.JsonRestore() for name in wanted if name in on_disk})
        restored = self._manager.restore(step, args=ocp_args.Composite(**names))
        self._binding.apply(finish(restored[_STATE]))
        self.restored_items = {name: restored[name] for name in self._items if name in on_disk}
        if self._config is not None and _CONFIG in on_disk:
            self.restored_config = _config_from(restored[_CONFIG], like=self._config)
        if hasattr(self._trainer, "step"):
            self._trainer.step = step
        self.restored_step = step
        return step

    def _changed_optimizer_request(self, saved: Any, live: Any) -> tuple[Any, Any]:
        choice = self._optimizer_changed
        if choice == "reinitialize":
            target = optimizer_change.kept_fields(live)
            return (ocp_args.PyTreeRestore(item=target, partial_restore=True),
                    lambda tree: optimizer_change.rebuilt(live, tree, choice))
        return (ocp_args.StandardRestore(None),
                lambda tree: optimizer_change.rebuilt(live, tree, choice))

    def _nnx_request(self, saved: Any, live: Any) -> tuple[Any, Any]:
        # Both NNX forms on disk take one path: the checks and the partial restores work
        # on pure dicts; a `{'value': ...}`-wrapped checkpoint is unwrapped to get there.
        wrapped = self._binding.is_wrapped
        saved = getattr(saved, "tree", saved)  # item_metadata gives a TreeMetadata
        saved_pure = nnx_state.without_variable_wrappers(saved) if wrapped else saved
        live_pure = nnx_state.pure_target(live) if wrapped else live
        paths = nnx_optimizer_change.optimizer_paths(self._trainer.state)
        error = nnx_optimizer_change.changed_optimizer_error(saved_pure, live_pure, paths)
        if error is None:
            return ocp_args.StandardRestore(live), _unchanged
        if self._optimizer_changed == "raise":
            nnx_optimizer_change.raise_for_changed_optimizer(error)
        read = nnx_state.without_variable_wrappers if wrapped else _unchanged
        back = self._as_live_state if wrapped else _unchanged
        if self._optimizer_changed == "transfer":
            return (ocp_args.StandardRestore(None), lambda tree: back(
                nnx_optimizer_change.transferred(read(tree), live_pure, paths)))
        target = nnx_optimizer_change.without_opt_states(live_pure, paths)
        if wrapped:
            target = nnx_state.with_variable_wrappers(target)
        return (ocp_args.PyTreeRestore(item=target, partial_restore=True),
                lambda tree: back(read(tree)))

    def _as_live_state(self, restored_pure: Any) -> Any:
        """The live `nnx.State` with the restored values: what a wrapped restore applies."""
        return nnx_state.restore_into_state(nnx_state.live_state(self._trainer.state),
                                            restored_pure)

    def save(self, step: int, *, metrics: Mapping[str, Any] | None = None,
             force: bool = False) -> bool:
        """Collective. Saves `step` when the manager's policy (or `force`) says so."""
        names: dict[str, Any] = {_STATE: ocp_args.StandardSave(self._binding.tree())}
        names.update({name: ocp_args.JsonSave(read()) for name, read in self._items.items()})
        if self._config is not None:
            names[_CONFIG] = ocp_args.JsonSave(_config_as_json(self._config))
        return self._manager.save(step, args=ocp_args.Composite(**names), metrics=metrics,
                                  force=force)

    def on_step_end(self, step: int, metrics: Mapping[str, Any] | None = None) -> bool:
        """Collective. The end of training step `step`: save if due; stop if preempted.

        Returns whether it saved. After a preemption the step is saved (even when the
        policy would skip it), the save is committed, and `should_stop` turns True.
        """
        saved = self.save(step, metrics=metrics)
        if self._manager.reached_preemption(step):
            if not saved and step not in self._manager.all_steps():
                saved = self.save(step, metrics=metrics, force=True)
            self._manager.wait_until_finished()
            logger.info("Preempted at step %d: saved, should_stop is now True", step)
            self.should_stop = True
        return saved

    def __call__(self, step: int, t: float | None = None) -> None:
        """CLU-style periodic action: `ckpt(step, t=time.time())`; `t` is not used."""
        del t
        self.on_step_end(step)

    def wait_until_finished(self) -> None:
        """Blocks until the save in flight has committed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Collective. Waits for the save in flight and closes the manager. Idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        self._manager.close()

    def __enter__(self) -> TrainingCheckpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def attach(trainer: Any, directory: str | os.PathLike[str], *,
           options: ocp.CheckpointManagerOptions | None = None,
           items: Mapping[str, Callable[[], Any]] | None = None,
           config: Any = None, optimizer_changed: str = "raise",
           preemption_source: multihost.PreemptionSource | None = None) -> TrainingCheckpointer:
    """Collective. A checkpoint callback for `trainer`, resumed from its latest step.

    `trainer` has a `state` (a linen TrainState, an NNX model/optimizer or a tuple of
    them, or any pytree) and optionally a `step`, set to the restored step. `items` maps
    names to functions returning JSON-able values saved with every step (restored into
    `restored_items`); `config` (an `ml_collections.ConfigDict` or a dict) is saved as JSON
    and restored into `restored_config`. A step saved without one of them (an item added
    to a running job) restores the rest and logs it; so does a step with an unnamed item. A `callbacks` or `hooks` list on the trainer gets
    the callback appended. When the optimizer of a linen TrainState or an `nnx.Optimizer`
    no longer fits the checkpoint, `optimizer_changed` decides: "raise" (name the first
    differing node), "reinitialize" (restore the rest, start the optimizer afresh) or
    "transfer" (also keep the saved optimizer leaves that still fit). `preemption_source` replaces the manager's
    default (SIGTERM alone, JAX's preemption sync point under `jax.distributed`).
    """
    items = dict(items or {})
    for reserved in (_STATE, _CONFIG, "metrics"):
        if reserved in items:
            raise InvalidArgumentError(
                f"Expected extra item names other than {_STATE!r}, {_CONFIG!r} and "
                f"'metrics', got {reserved!r} in items={sorted(items)}. To fix, rename it.")
    for name, read in items.items():
        if not callable(read):
            raise InvalidArgumentError(
                f"Expected items[{name!r}] to be a function returning the value to save with "
                f"each step, got {type(read).__name__}. To fix, pass items={{{name!r}: lambda: "
                "value}, so the value is read when the step is saved.")
    if config is not None and not (isinstance(config, Mapping)
                                   or callable(getattr(config, "to_dict", None))):
        raise InvalidArgumentError(
            f"Expected config to be an ml_collections.ConfigDict or a dict, got "
            f"{type(config).__name__}. To fix, pass the ConfigDict, or vars(args) for an "
            "argparse namespace.")
    names = [_STATE, *items] + ([_CONFIG] if config is not None else [])
    manager = ocp.CheckpointManager(directory, options, item_names=names,
                                    preemption_source=preemption_source)
    try:
        checkpointer = TrainingCheckpointer(trainer, manager, items=items, config=config,
                                            optimizer_changed=optimizer_changed)
    except BaseException:
        manager.close()
        raise
    try:
        checkpointer.restore()
    except BaseException:
        checkpointer.close()
        raise
    for attribute in _HOOK_LISTS:
        hooks = getattr(trainer, attribute, None)
        if isinstance(hooks, list):
            hooks.append(checkpointer)
            break
    return checkpointer


def _log_item_differences(step: int, wanted: list[str], on_disk: set[str]) -> None:
    """One log line per extra item the step lacks (kept as it is) or holds unasked."""
    for name in wanted:
        if name not in on_disk:
            logger.info("Step %d has no item %r (saved before it was added): it keeps its "
                        "current value", step, name)
    for name in sorted(on_disk - {_STATE, *wanted}):
        logger.info("Step %d also holds item %r, which attach does not name: not restored",
                    step, name)


def _unchanged(tree: Any) -> Any:
    return tree


def _config_as_json(config: Any) -> Any:
    to_dict = getattr(config, "to_dict", None)
    return to_dict() if callable(to_dict) else dict(config)


def _config_from(saved: Any, *, like: Any) -> Any:
    if isinstance(like, dict):
        return saved
    return type(like)(saved)
