"""Orbax's legacy manager forms, mapped onto the modern `args=` path.

Orbax 0.12 still accepts, and much published code uses:

- `CheckpointManager(directory, checkpointers, options)` with one Checkpointer (one
  unnamed item) or a dict {item name: Checkpointer}: the checkpointers' handlers become
  the manager's `item_handlers`;
- `save(step, items, save_kwargs)`: each item becomes its handler's registered save args
  (`PyTreeSave(item, **save_kwargs)`), all of them one `Composite`;
- `restore(step, items=..., restore_kwargs=...)`: likewise with the restore args, so
  `restore_kwargs={'restore_args': ..., 'transforms': ...}` reach `PyTreeRestore`.

Each form logs one deprecation warning per process. The manager then runs exactly the
code it runs for `args=`; nothing else knows a legacy form was used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxpoint.core.checkpointers import AsyncCheckpointer, AsyncOptions, Checkpointer
from jaxpoint.core.checkpointers.legacy_forms import build_args, warn_deprecated_form
from jaxpoint.core.checkpointers.step_metadata import read_step_metadata
from jaxpoint.core.errors import CheckpointNotFoundError, InvalidArgumentError
from jaxpoint.core.handlers import CheckpointArgs, Composite
from jaxpoint.core.handlers.registry import handler_for_typestr
from jaxpoint.core.manager.items import DEFAULT_ITEM, ItemLayout
from jaxpoint.core.manager.options import CheckpointManagerOptions
from jaxpoint.core.manager.step_catalog import METRICS_ITEM
from jaxpoint.core.storage import Location


@dataclasses.dataclass(frozen=True, kw_only=True)
class ManagerConstruction:
    """What a manager is built from, once a legacy `checkpointers` argument is resolved."""

    options: CheckpointManagerOptions
    item_handlers: Any


def resolve_construction(checkpointers: Any, options: Any, *, item_names: Any,
                         item_handlers: Any) -> ManagerConstruction:
    """Sorts out `CheckpointManager(directory, second, third, ...)`.

    The second positional is Orbax's `checkpointers`; jaxpoint also takes the options
    there (`CheckpointManager(directory, options)`), which is not a legacy form.
    """
    if isinstance(checkpointers, CheckpointManagerOptions):
        if options is not None:
            raise InvalidArgumentError(
                "Expected CheckpointManagerOptions once, got them both as the second "
                "positional argument and as options=. To fix, pass them once, as options=."
            )
        checkpointers, options = None, checkpointers
    options = _validated_options(options)
    if checkpointers is None:
        return ManagerConstruction(options=options, item_handlers=item_handlers)
    handlers = _handlers_of(checkpointers)
    if item_names is not None or item_handlers is not None:
        raise InvalidArgumentError(
            "Expected either Orbax's legacy checkpointers or item_names / item_handlers, got "
            "both. To fix, drop the checkpointers and pass item_handlers={name: "
            "checkpointer.handler, ...}, or drop item_names / item_handlers."
        )
    warn_deprecated_form("CheckpointManager(directory, checkpointers, options)",
                         "CheckpointManager(directory, options=..., item_handlers=...) with "
                         "save(step, args=...)")
    group = list(checkpointers.values()) if isinstance(checkpointers, Mapping) else [checkpointers]
    _check_multiprocessing(group, options)
    is_async = options.enable_async_checkpointing and any(
        isinstance(c, AsyncCheckpointer) for c in group)
    return ManagerConstruction(
        options=dataclasses.replace(options, enable_async_checkpointing=is_async,
                                    async_options=_async_options(group, options)),
        item_handlers=handlers)


def _validated_options(options: Any) -> CheckpointManagerOptions:
    if options is None:
        return CheckpointManagerOptions()
    if not isinstance(options, CheckpointManagerOptions):
        raise InvalidArgumentError(
            f"Expected options to be CheckpointManagerOptions, got {type(options).__name__}. "
            "To fix, pass options=CheckpointManagerOptions(...)."
        )
    return options


def _handlers_of(checkpointers: Any) -> Any:
    if isinstance(checkpointers, Checkpointer):
        return checkpointers.handler
    if not isinstance(checkpointers, Mapping):
        hint = ("item_handlers=" + type(checkpointers).__name__ + "(...) by keyword"
                if hasattr(checkpointers, "stage") else "options=CheckpointManagerOptions(...)")
        raise InvalidArgumentError(
            f"Expected the second argument of CheckpointManager to be CheckpointManagerOptions, "
            f"or Orbax's legacy checkpointers (a Checkpointer or a dict of them), got "
            f"{type(checkpointers).__name__}. To fix, pass {hint}."
        )
    handlers = {}
    for name, checkpointer in checkpointers.items():
        if not isinstance(checkpointer, Checkpointer):
            raise InvalidArgumentError(
                f"Expected a Checkpointer for item {name!r} in checkpointers, got "
                f"{type(checkpointer).__name__}. To fix, wrap its handler: "
                f"Checkpointer(handler), or pass item_handlers= instead."
            )
        if name == METRICS_ITEM:
            raise InvalidArgumentError(
                f"Item name {METRICS_ITEM!r} in checkpointers is reserved for save(metrics=...)"
                " (as in Orbax). To fix, rename the item."
            )
        handlers[name] = checkpointer.handler
    return handlers


def _check_multiprocessing(group: list[Checkpointer], options: CheckpointManagerOptions) -> None:
    for checkpointer in group:
        if checkpointer.multiprocessing_options != options.multiprocessing_options:
            raise InvalidArgumentError(
                f"Expected the legacy checkpointers to use the manager's multiprocessing "
                f"options {options.multiprocessing_options}, got "
                f"{checkpointer.multiprocessing_options} on a {type(checkpointer).__name__}. "
                "The manager runs every save with its own. To fix, pass them as "
                "CheckpointManagerOptions(multiprocessing_options=...)."
            )


def _async_options(group: list[Checkpointer], options: CheckpointManagerOptions
                   ) -> AsyncOptions | None:
    """The manager's async options, else the checkpointers' (longest timeout, as Orbax)."""
    if options.async_options is not None:
        return options.async_options
    given = [c.async_options for c in group if isinstance(c, AsyncCheckpointer)]
    if not given:
        return None
    callbacks = {id(o.post_finalization_callback): o.post_finalization_callback for o in given
                 if o.post_finalization_callback is not None}
    if callbacks and not options.enable_async_checkpointing:
        raise InvalidArgumentError(
            "Expected no post_finalization_callback on the legacy checkpointers with "
            "enable_async_checkpointing=False: saves are then synchronous and would never "
            "call it. To fix, drop the callback, or enable asynchronous checkpointing."
        )
    if len(callbacks) > 1:
        raise InvalidArgumentError(
            f"Expected at most one post_finalization_callback among the legacy checkpointers, "
            f"got {len(callbacks)}. The manager commits every item in one save. To fix, pass "
            "one in CheckpointManagerOptions(async_options=AsyncOptions(...))."
        )
    return AsyncOptions(timeout_secs=max(o.timeout_secs for o in given),
                        post_finalization_callback=next(iter(callbacks.values()), None))


def save_args(layout: ItemLayout, items: Any, save_kwargs: Any, args: Any, *, step: int) -> Any:
    """`args` for `save`, built from Orbax's legacy `items` / `save_kwargs` when given."""
    where = f"save(step={step})"
    args = _modern_args(items, save_kwargs, args, extra="save_kwargs", where=where)
    if args is not _LEGACY:
        return args
    warn_deprecated_form("CheckpointManager.save(step, items, save_kwargs)",
                         "CheckpointManager.save(step, args=...)")
    if layout.is_default is not False and items is None:
        raise InvalidArgumentError(
            f"Expected the item to save in {where}, got only save_kwargs. To fix, pass "
            "save(step, args=ocp.args.StandardSave(tree))."
        )
    # A manager whose mode is still unknown takes a plain item as its one item, as Orbax.
    return _built(layout, items, save_kwargs, is_default=layout.is_default is not False,
                  recorded=None, for_save=True, where=where)


def restore_args(layout: ItemLayout, items: Any, restore_kwargs: Any, args: Any, *,
                 step: int, folder: Location) -> Any:
    """`args` for `restore`, built from Orbax's legacy `items` / `restore_kwargs`."""
    where = f"restore(step={step})"
    args = _modern_args(items, restore_kwargs, args, extra="restore_kwargs", where=where)
    if args is not _LEGACY:
        return args
    warn_deprecated_form("CheckpointManager.restore(step, items, restore_kwargs)",
                         "CheckpointManager.restore(step, args=...)")
    layout.restore_args(None, folder, step=step)  # settles one item vs named items
    return _built(layout, items, restore_kwargs, is_default=bool(layout.is_default),
                  recorded=_recorded_handlers(folder), for_save=False, where=where)


def _built(layout: ItemLayout, items: Any, kwargs: Any, *, is_default: bool,
           recorded: dict[str, str] | None, for_save: bool, where: str) -> Any:
    """Each item's registered args class applied to (item, **its kwargs)."""
    if is_default:
        handler = _handler(layout, DEFAULT_ITEM, recorded, where=where)
        return build_args(handler, [items], _kwargs(kwargs, where=where), for_save=for_save,
                          where=f"CheckpointManager.{where}")
    built = {}
    for name, item, item_kwargs in _named_pieces(items, kwargs, where=where):
        handler = _handler(layout, name, recorded, where=where)
        built[name] = build_args(handler, [item], item_kwargs, for_save=for_save,
                                 where=f"CheckpointManager.{where} of item {name!r}")
    return Composite(**built)


_LEGACY = object()


def _modern_args(items: Any, kwargs: Any, args: Any, *, extra: str, where: str) -> Any:
    """The modern args when the call is not a legacy one; `_LEGACY` when it is."""
    if isinstance(items, CheckpointArgs):  # jaxpoint's own positional `save(step, args)`
        items, args = None, _only_args(args, items, where=where)
    if items is None and kwargs is None:
        return args
    if args is not None:
        raise InvalidArgumentError(
            f"Expected either args= or Orbax's legacy items / {extra} in {where}, got both. "
            f"To fix, drop items and {extra}, and pass everything in args=."
        )
    return _LEGACY


def _only_args(args: Any, positional: CheckpointArgs, *, where: str) -> CheckpointArgs:
    if args is not None:
        raise InvalidArgumentError(
            f"Expected args once in {where}, got {type(positional).__name__} as the second "
            f"positional argument and args={type(args).__name__}. To fix, pass only args=."
        )
    return positional


def _kwargs(kwargs: Any, *, where: str) -> dict[str, Any]:
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise InvalidArgumentError(
            f"Expected the legacy kwargs in {where} to be a dict of keyword arguments, got "
            f"{type(kwargs).__name__}. To fix, pass e.g. {{'save_args': ...}} or use args=."
        )
    return dict(kwargs)


def _named_pieces(items: Any, kwargs: Any, *, where: str) -> list[tuple[str, Any, dict[str, Any]]]:
    """(name, item, keywords) per named item: from `items` and the per-item `kwargs`."""
    if items is not None and not isinstance(items, Mapping):
        raise InvalidArgumentError(
            f"Expected items to be a dict {{item name: item}} in {where}: this manager holds "
            f"named items, got {type(items).__name__}. To fix, pass e.g. {{'state': tree}}, "
            "or args=ocp.args.Composite(state=...)."
        )
    per_item = _kwargs(kwargs, where=where)
    items = dict(items or {})
    names = list(items) + [name for name in per_item if name not in items]
    return [(name, items.get(name), _kwargs(per_item.get(name), where=f"{where} of item "
                                            f"{name!r}")) for name in names]


def _recorded_handlers(folder: Location) -> dict[str, str]:
    try:
        recorded = read_step_metadata(folder).item_handlers
    except CheckpointNotFoundError:
        return {}
    return recorded if isinstance(recorded, dict) else {}


def _handler(layout: ItemLayout, name: str, recorded: dict[str, str] | None, *,
             where: str) -> Any:
    """The handler of item `name`: the manager's, else (restoring) the one the step records."""
    handler = layout.handler.handler(name)
    if handler is None and recorded is not None and isinstance(recorded.get(name), str):
        handler = handler_for_typestr(recorded[name])
    if handler is None:
        known = sorted(n for n in layout.handler.item_names - {METRICS_ITEM}
                       if layout.handler.handler(n) is not None)
        raise InvalidArgumentError(
            f"Expected a handler for item {name!r} in the legacy form of {where}, found none "
            f"(items with handlers: {known}). To fix, build the manager with checkpointers / "
            f"item_handlers for {name!r}, or pass args= naming the args class."
        )
    return handler
