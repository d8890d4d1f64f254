"""Which `TypeHandler` serves which leaf type: Orbax's global type-handler registry.

Lookups go in registration order and the first match wins, as in Orbax; a type is matched
by `issubclass(leaf_type, ty)` unless a `func` is given. The handler for a recorded
`value_type` is found by its `typestr()`. Staging asks `custom_handler_for` once per
leaf type, so the answer is cached until the next registration.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jaxpoint.core.errors import InvalidArgumentError, UnsupportedLeafError
from jaxpoint.core.handlers.type_handler import (
    ArrayHandler,
    NumpyHandler,
    ScalarHandler,
    StringHandler,
    TypeHandler,
    is_native,
)

logger = logging.getLogger(__name__)



def _subclass_of(ty: Any) -> Callable[[type], bool]:
    return lambda t: isinstance(t, type) and issubclass(t, ty)

class TypeHandlerRegistry:
    """An ordered list of `(matches(type), handler)` plus a `typestr -> handler` index."""

    def __init__(self, *handlers: tuple[Any, TypeHandler]) -> None:
        self._entries: list[tuple[Callable[[type], bool], TypeHandler]] = []
        self._by_typestr: dict[str, TypeHandler] = {}
        self._custom_cache: dict[type, TypeHandler | None] = {}
        for ty, handler in handlers:
            self.add(ty, handler, override=True)

    def add(self, ty: Any, handler: TypeHandler, func: Callable[[type], bool] | None = None,
            override: bool = False) -> None:
        """Registers `handler` for `ty`; `override=True` replaces an existing registration."""
        if not isinstance(handler, TypeHandler):
            raise InvalidArgumentError(
                f"Expected a TypeHandler instance for {ty!r}, got {type(handler).__name__}. To "
                "fix, subclass ocp.type_handlers.TypeHandler and pass an instance."
            )
        matches = func or _subclass_of(ty)
        typestr = handler.typestr()
        existing = next((i for i, (f, _) in enumerate(self._entries) if f(ty)), None)
        if existing is None:
            if typestr in self._by_typestr and not override:
                raise InvalidArgumentError(
                    f"Expected a new typestr for {ty!r}, but {typestr!r} is already used by "
                    f"{type(self._by_typestr[typestr]).__name__}. To fix, return a distinct "
                    "typestr() or pass override=True."
                )
            self._entries.append((matches, handler))
        elif override:
            logger.info("Type handler for %r replaced by %s.", ty, type(handler).__name__)
            self._entries[existing] = (matches, handler)
        else:
            raise InvalidArgumentError(
                f"Expected no handler registered for {ty!r}, found "
                f"{type(self._entries[existing][1]).__name__}. To fix, pass override=True."
            )
        self._by_typestr[typestr] = handler
        self._custom_cache.clear()

    def get(self, ty: Any) -> TypeHandler:
        """The handler for a type, or for a recorded typestr when `ty` is a str."""
        if isinstance(ty, str):
            if ty in self._by_typestr:
                return self._by_typestr[ty]
        else:
            for matches, handler in self._entries:
                if matches(ty):
                    return handler
        raise UnsupportedLeafError(
            f"Expected a registered TypeHandler for {ty!r}, found none (known typestrs: "
            f"{sorted(self._by_typestr)}). To fix, call "
            "ocp.type_handlers.register_type_handler(YourType, YourHandler())."
        )

    def has(self, ty: Any) -> bool:
        try:
            self.get(ty)
        except UnsupportedLeafError:
            return False
        return True

    def custom_handler_for(self, ty: type) -> TypeHandler | None:
        """The handler for leaves of type `ty` when it is not served natively, else None."""
        try:
            return self._custom_cache[ty]
        except KeyError:
            pass
        handler = next((h for matches, h in self._entries if matches(ty)), None)
        custom = handler if handler is not None and not is_native(handler) else None
        self._custom_cache[ty] = custom
        return custom

    def custom_handler_for_typestr(self, typestr: str) -> TypeHandler | None:
        handler = self._by_typestr.get(typestr)
        return handler if handler is not None and not is_native(handler) else None

    def copy(self) -> TypeHandlerRegistry:
        """An independent registry with the same registrations."""
        clone = TypeHandlerRegistry()
        clone._entries, clone._by_typestr = list(self._entries), dict(self._by_typestr)
        return clone

    def replace_with(self, other: TypeHandlerRegistry) -> None:
        """Takes `other`'s registrations (used to undo registrations made in a test)."""
        self._entries, self._by_typestr = list(other._entries), dict(other._by_typestr)
        self._custom_cache.clear()


_DEFAULT_TYPES: tuple[tuple[Any, Callable[[], TypeHandler]], ...] = (
    (int, ScalarHandler), (float, ScalarHandler), (complex, ScalarHandler),
    (np.number, ScalarHandler), (np.bool_, ScalarHandler), (np.ndarray, NumpyHandler),
    (jax.Array, ArrayHandler), (str, StringHandler),
)

GLOBAL_TYPE_HANDLER_REGISTRY = TypeHandlerRegistry(*((ty, make()) for ty, make in _DEFAULT_TYPES))


def create_type_handler_registry(*handlers: tuple[Any, TypeHandler]) -> TypeHandlerRegistry:
    """A registry holding only `handlers` (pairs of type and handler)."""
    return TypeHandlerRegistry(*handlers)


def register_type_handler(ty: Any, handler: TypeHandler,
                          func: Callable[[type], bool] | None = None,
                          override: bool = False) -> None:
    """Makes `handler` save and restore leaves of type `ty` in every pytree item.

    Registering a replacement for `jax.Array` (e.g. `SingleReplicaArrayHandler(...)` as
    MaxText does) needs `override=True`.
    """
    GLOBAL_TYPE_HANDLER_REGISTRY.add(ty, handler, func, override)


def get_type_handler(ty: Any) -> TypeHandler:
    """The handler registered for a type (or a recorded typestr)."""
    return GLOBAL_TYPE_HANDLER_REGISTRY.get(ty)


def has_type_handler(ty: Any) -> bool:
    return GLOBAL_TYPE_HANDLER_REGISTRY.has(ty)


@contextlib.contextmanager
def global_type_handler_registry_context(
        registry: TypeHandlerRegistry | None = None) -> Iterator[TypeHandlerRegistry]:
    """Registrations made inside (or `registry`'s, when given) are undone on exit; for tests."""
    saved = GLOBAL_TYPE_HANDLER_REGISTRY.copy()
    if registry is not None:
        GLOBAL_TYPE_HANDLER_REGISTRY.replace_with(registry)
    try:
        yield GLOBAL_TYPE_HANDLER_REGISTRY
    finally:
        GLOBAL_TYPE_HANDLER_REGISTRY.replace_with(saved)


def supported_types() -> list[Any]:
    """The leaf types jaxpoint handles without registration."""
    return [ty for ty, _ in _DEFAULT_TYPES]
