"""Orbax's `DefaultCheckpointHandlerRegistry`: which handler serves each (item, args type)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.handlers.registry import get_registered_args_cls, get_registered_handler_cls

HandlerRegistryMapping = Mapping[tuple[str | None, type], Any]


class AlreadyExistsError(InvalidArgumentError):
    """An (item, args type) entry is added twice."""


class NoEntryError(InvalidArgumentError, KeyError):
    """No handler is registered for an (item, args type)."""


def _args_type(args: Any) -> type:
    return args if isinstance(args, type) else type(args)


class DefaultCheckpointHandlerRegistry:
    """Maps `(item name, args type)` to a handler instance; item None applies to any item.

    A CheckpointManager takes one as `handler_registry=registry`, as in Orbax.
    """

    def __init__(self, other_registry: DefaultCheckpointHandlerRegistry | None = None) -> None:
        self._entries: dict[tuple[str | None, type], Any] = {}
        if other_registry is not None:
            for (item, args_type), handler in other_registry.get_all_entries().items():
                self.add(item, args_type, handler)

    def add(self, item: str | None, args: Any, handler: Any = None) -> None:
        """Registers `handler` (an instance, a class, or None: the args' registered handler)."""
        args_type = _args_type(args)
        if (item, args_type) in self._entries:
            raise AlreadyExistsError(
                f"Expected one entry per item and args type, but item={item!r} with "
                f"{args_type.__name__} is already registered. To fix, add it once, or use a new "
                "registry."
            )
        chosen = handler if handler is not None else get_registered_handler_cls(args_type)
        if isinstance(chosen, type):
            try:
                chosen = chosen()
            except TypeError as error:
                raise InvalidArgumentError(
                    f"Expected {chosen.__name__} to be constructible without arguments for "
                    f"item={item!r}, it is not ({error}). To fix, pass a handler instance."
                ) from error
        self._entries[(item, args_type)] = chosen

    def get(self, item: str | None, args: Any) -> Any:
        args_type = _args_type(args)
        for key in ((item, args_type), (None, args_type)):
            if key in self._entries:
                return self._entries[key]
        raise NoEntryError(
            f"Expected a handler for item={item!r} and {args_type.__name__}, found none (known: "
            f"{[(i, a.__name__) for i, a in self._entries]}). To fix, registry.add({item!r}, "
            f"{args_type.__name__}, handler)."
        )

    def has(self, item: str | None, args: Any) -> bool:
        try:
            self.get(item, args)
        except NoEntryError:
            return False
        return True

    def get_all_entries(self) -> HandlerRegistryMapping:
        return dict(self._entries)

    def item_handlers(self) -> dict[str, Any]:
        """`{item: handler}` for CheckpointManager(item_handlers=...); one handler per item."""
        by_item: dict[str, Any] = {}
        for (item, _), handler in self._entries.items():
            if item is None:
                continue
            other = by_item.setdefault(item, handler)
            if other is not handler and type(other) is not type(handler):
                raise InvalidArgumentError(
                    f"Expected one handler for item {item!r}, found {type(other).__name__} and "
                    f"{type(handler).__name__}. To fix, register the same handler for its save "
                    "and restore args."
                )
        return by_item

    def __repr__(self) -> str:
        return f"DefaultCheckpointHandlerRegistry({self._entries!r})"


def create_default_handler_registry(**items_to_handlers: Any) -> DefaultCheckpointHandlerRegistry:
    """A registry holding each handler for its item, under its save and restore args."""
    registry = DefaultCheckpointHandlerRegistry()
    for item, handler in items_to_handlers.items():
        save, restore = get_registered_args_cls(handler)
        registry.add(item, save, handler)
        registry.add(item, restore, handler)
    return registry

