"""Which items a manager's steps hold, and how args map onto them.

Every step is written by one CompositeCheckpointHandler, one folder per item. A manager
either manages a single unnamed item, stored as `default/` exactly as Orbax stores it
(`save(step, args=StandardSave(tree))`), or named items (`args=Composite(state=...,
config=...)`). The mode comes from `item_handlers` / `item_names` when given, else from the
first args seen, else from the first step restored. Metrics travel as one more JSON item,
`metrics/metrics`, the file Orbax reads them from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from jaxpoint.core.errors import CheckpointNotFoundError, InvalidArgumentError
from jaxpoint.core.handlers import (
    CheckpointArgs,
    Composite,
    CompositeCheckpointHandler,
    DefaultCheckpointHandlerRegistry,
    JsonCheckpointHandler,
    JsonSave,
    get_registered_handler_cls,
)
from jaxpoint.core.manager.step_catalog import METRICS_ITEM
from jaxpoint.core.storage import Location, validate_name
from jaxpoint.core.storage.step_layout import item_folders

DEFAULT_ITEM = "default"


def plain_metrics(metrics: Mapping[str, Any] | None, *, step: int) -> dict[str, Any] | None:
    """`metrics` as plain JSON values; NumPy/JAX scalars become Python numbers."""
    if metrics is None:
        return None
    if not isinstance(metrics, Mapping):
        raise InvalidArgumentError(
            f"Expected metrics for step {step} to be a dict, got {type(metrics).__name__}. "
            "To fix, pass e.g. metrics={'loss': 0.25}."
        )

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            return value.item()  # numpy / jax scalar
        return value

    converted = plain(metrics)
    try:
        json.dumps(converted, allow_nan=True)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(
            f"Expected metrics for step {step} to hold numbers, strings, lists or dicts, got "
            f"{dict(metrics)!r}: {error}. To fix, convert arrays with .tolist() or float()."
        ) from error
    return converted


def handlers_from_registry(registry: Any, *, item_names: Sequence[str] | None,
                           item_handlers: Any, checkpointers: Any) -> Any:
    """Orbax's `CheckpointManager(handler_registry=...)` as `item_handlers`.

    Entries for a named item become that item's handler. Entries for any item (`None`)
    are accepted only where they name the args' own registered handler, which is what a
    manager without handlers uses anyway; anything else would be silently ignored.
    """
    if registry is None:
        return item_handlers
    given = [name for name, value in (("checkpointers", checkpointers), ("item_names", item_names),
                                      ("item_handlers", item_handlers)) if value is not None]
    if given:
        raise InvalidArgumentError(
            f"Expected either handler_registry or {' / '.join(given)}, got both (as Orbax "
            "0.12.8 also refuses). To fix, register every item's handlers in the registry."
        )
    if not isinstance(registry, DefaultCheckpointHandlerRegistry):
        raise InvalidArgumentError(
            f"Expected handler_registry to be a DefaultCheckpointHandlerRegistry, got "
            f"{type(registry).__name__}. To fix, build one with "
            "ocp.handlers.DefaultCheckpointHandlerRegistry() and registry.add(...)."
        )
    any_item = {args_type: handler for (item, args_type), handler
                in registry.get_all_entries().items() if item is None}
    for args_type, handler in any_item.items():
        if type(handler) is not get_registered_handler_cls(args_type):
            raise InvalidArgumentError(
                f"Expected handler_registry entries for item=None to use the handler "
                f"registered for {args_type.__name__}, got {type(handler).__name__}. To fix, "
                "register that handler under the item's name, e.g. registry.add('state', "
                f"{args_type.__name__}, handler)."
            )
    named = registry.item_handlers()
    if named and any_item:  # named items fix the item set; other names would be refused
        raise InvalidArgumentError(
            f"Expected handler_registry to hold either named items or entries for any item "
            f"(item=None), got both: items {sorted(named)} and item=None for "
            f"{sorted(t.__name__ for t in any_item)}. To fix, register each item by name."
        )
    return named or None


class ItemLayout:
    """Maps the manager's args onto the composite handler's items and back."""

    def __init__(self, *, item_names: Sequence[str] | None, item_handlers: Any) -> None:
        self._is_default: bool | None = None
        self._declared: set[str] | None = None
        handlers: dict[str, Any] = {}
        if item_handlers is not None and not isinstance(item_handlers, Mapping):
            if item_names is not None:
                raise InvalidArgumentError(
                    "Expected item_handlers to be a dict {item name: handler} when item_names "
                    f"is given, got a single {type(item_handlers).__name__}. To fix, pass "
                    "item_handlers={'state': handler, ...}, or drop item_names for one item."
                )
            self._is_default, handlers = True, {DEFAULT_ITEM: item_handlers}
        elif item_handlers is not None or item_names is not None:
            if isinstance(item_names, str):
                raise InvalidArgumentError(
                    f"Expected item_names to be a sequence of names, got the str {item_names!r}."
                    f" To fix, pass item_names=({item_names!r},)."
                )
            handlers = dict(item_handlers or {})
            self._is_default = False
            self._declared = {validate_name(n, what="item name")
                              for n in (*(item_names or ()), *handlers)}
        handlers.setdefault(METRICS_ITEM, JsonCheckpointHandler(filename=METRICS_ITEM))
        self.handler = CompositeCheckpointHandler(*sorted(self._declared or ()), **handlers)

    @property
    def is_default(self) -> bool | None:
        """True: one unnamed item; False: named items; None: not known yet."""
        return self._is_default

    def _decide(self, is_default: bool, *, where: str) -> None:
        if self._is_default is None:
            self._is_default = is_default
        elif self._is_default != is_default:
            raise InvalidArgumentError(self._mode_mismatch(where))

    def _mode_mismatch(self, where: str) -> str:
        if self._is_default:
            return (f"Expected args for the single unnamed item of this manager in {where}, got "
                    "args.Composite. To fix, pass the item's args directly (e.g. "
                    "args.StandardSave(tree)), or build the manager with item_names=... to "
                    "manage named items.")
        example = ("args.Composite(state=args.StandardRestore(target))" if where.startswith(
            "restore") else "args.Composite(state=args.StandardSave(tree))")
        return (f"Expected args.Composite(<item>=...) in {where}: this manager holds named "
                f"items. To fix, wrap the args, e.g. {example}.")

    def _check_known(self, names: Sequence[str], *, where: str) -> None:
        if self._declared is None:
            return
        unknown = sorted(set(names) - self._declared - {METRICS_ITEM})
        if unknown:
            raise InvalidArgumentError(
                f"Unknown item name(s) {unknown} in {where}; this manager was built with items "
                f"{sorted(self._declared)}. To fix, use those names or add {unknown} to "
                "item_names / item_handlers."
            )

    def save_args(self, args: Any, metrics: dict[str, Any] | None, *, step: int) -> Composite:
        """The Composite to save at `step`: the user's items plus the metrics item."""
        where = f"save(step={step})"
        if args is None or not isinstance(args, CheckpointArgs):
            raise InvalidArgumentError(
                f"Expected args to be a CheckpointArgs object in {where}, got "
                f"{type(args).__name__}. To fix, pass args=ocp.args.StandardSave(tree) (one "
                "item) or args=ocp.args.Composite(state=..., ...) (named items)."
            )
        self._decide(not isinstance(args, Composite), where=where)
        items = {DEFAULT_ITEM: args} if self._is_default else dict(cast(Composite, args).items())
        self._check_known(list(items), where=where)
        if metrics is not None:
            if METRICS_ITEM in items:
                raise InvalidArgumentError(
                    f"Item name {METRICS_ITEM!r} in {where} is reserved for metrics= (saved as "
                    f"{METRICS_ITEM}/{METRICS_ITEM}, as Orbax does). To fix, rename the item."
                )
            items[METRICS_ITEM] = JsonSave(metrics)
        return Composite(**items)

    def restore_args(self, args: Any, folder: Location, *, step: int) -> Composite | None:
        """The Composite to restore from `folder`; None restores every known item."""
        where = f"restore(step={step})"
        present = item_folders(folder)
        if self._is_default is None:
            self._decide(DEFAULT_ITEM in present, where=where)
        if args is None:
            return None
        if not isinstance(args, CheckpointArgs):
            raise InvalidArgumentError(
                f"Expected args to be a CheckpointArgs object or None in {where}, got "
                f"{type(args).__name__}. To fix, pass e.g. args=ocp.args.StandardRestore(target)."
            )
        self._decide(not isinstance(args, Composite), where=where)
        items = {DEFAULT_ITEM: args} if self._is_default else dict(cast(Composite, args).items())
        self._check_known(list(items), where=where)
        missing = sorted(set(items) - set(present))
        if missing:
            raise CheckpointNotFoundError(
                f"Expected item(s) {missing} in step {step} at {folder}, found only items "
                f"{present}. To fix, restore one of the saved items."
            )
        return Composite(**items)

    def unwrap(self, restored: Composite, *, step: int) -> Any:
        """What `restore` returns: the single item, or the Composite of named items."""
        if not self._is_default:
            return restored
        if DEFAULT_ITEM not in restored:
            raise CheckpointNotFoundError(
                f"Expected the item {DEFAULT_ITEM!r} in step {step}, found {sorted(restored)}. "
                "To fix, restore with args=Composite(...) naming the saved items."
            )
        return restored[DEFAULT_ITEM]

