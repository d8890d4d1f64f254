"""Which handler serves which args type, and which handler an orbax type name means.

Metadata names handler types as strings; they are looked up here and never imported,
so a hostile checkpoint cannot make jaxpoint load code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from jaxpoint.core.errors import UnregisteredArgsError

_SAVE_ARGS: dict[type, type] = {}
_RESTORE_ARGS: dict[type, type] = {}
_BY_TYPESTR: dict[str, type] = {}

ArgsT = TypeVar("ArgsT", bound=type)


def register_with_handler(handler_cls: type, *, for_save: bool = False,
                          for_restore: bool = False) -> Callable[[ArgsT], ArgsT]:
    """Class decorator: `args_cls` is the save and/or restore args of `handler_cls`."""
    if not (for_save or for_restore):
        raise UnregisteredArgsError(
            f"register_with_handler({handler_cls.__name__}) needs for_save=True and/or "
            "for_restore=True."
        )

    def decorate(args_cls: ArgsT) -> ArgsT:
        if for_save:
            _SAVE_ARGS[args_cls] = handler_cls
        if for_restore:
            _RESTORE_ARGS[args_cls] = handler_cls
        register_typestr(handler_cls)
        return args_cls

    return decorate


def register_typestr(handler_cls: type, *aliases: str) -> None:
    """Makes `handler_cls` known by its typestr (and any aliases, e.g. orbax's names)."""
    for name in (getattr(handler_cls, "typestr", None), f"{handler_cls.__module__}."
                 f"{handler_cls.__qualname__}", *aliases):
        if name:
            _BY_TYPESTR.setdefault(name, handler_cls)


def handler_for_args(args: Any) -> type:
    """The handler class registered for this args object's type (save or restore)."""
    for cls in type(args).__mro__:
        handler = _SAVE_ARGS.get(cls) or _RESTORE_ARGS.get(cls)
        if handler is not None:
            return handler
    known = sorted({c.__name__ for c in (*_SAVE_ARGS, *_RESTORE_ARGS)})
    raise UnregisteredArgsError(
        f"Expected args of a registered type, got {type(args).__name__}. Known: {known}. To "
        "fix, pass one of those or decorate your args class with "
        "@register_with_handler(YourHandler, for_save=True, for_restore=True)."
    )


def args_classes_for(handler: Any) -> tuple[type | None, type | None]:
    """The (save, restore) args classes registered for a handler (instance or class).

    The nearest class in the handler's MRO wins, so a subclass of a handler uses its
    base's args unless it registered its own; the first class registered wins a tie.
    """
    handler_cls = handler if isinstance(handler, type) else type(handler)
    for cls in handler_cls.__mro__:
        save = next((a for a, h in _SAVE_ARGS.items() if h is cls), None)
        restore = next((a for a, h in _RESTORE_ARGS.items() if h is cls), None)
        if save is not None or restore is not None:
            return save, restore
    return None, None


def is_save_args(args: Any) -> bool:
    """True for args registered only for saving (e.g. StandardSave)."""
    cls = type(args)
    return any(c in _SAVE_ARGS for c in cls.__mro__) and not any(
        c in _RESTORE_ARGS for c in cls.__mro__)


def handler_supports(handler: Any, args: Any) -> bool:
    """True if `args` was registered for `handler`'s class (or a base of it)."""
    for cls in type(args).__mro__:
        for table in (_SAVE_ARGS, _RESTORE_ARGS):
            registered = table.get(cls)
            if registered is not None and isinstance(handler, registered):
                return True
    return False


def handler_for_typestr(typestr: str) -> type | None:
    """The handler class for a recorded type name, or None when it is unknown."""
    return _BY_TYPESTR.get(typestr)


def get_registered_handler_cls(args: Any) -> type:
    """The handler class an args class (or instance) was registered with (save or restore)."""
    args_cls = args if isinstance(args, type) else type(args)
    handler = _SAVE_ARGS.get(args_cls) or _RESTORE_ARGS.get(args_cls)
    if handler is None:
        raise UnregisteredArgsError(
            f"Expected an args class registered with a handler, got {args_cls.__name__}. To "
            "fix, decorate it with @register_with_handler(YourHandler, for_save=True) "
            "and/or for_restore=True."
        )
    return handler


def get_registered_args_cls(handler: Any) -> tuple[type, type]:
    """The (save, restore) args classes registered for a handler class (or instance)."""
    handler_cls = handler if isinstance(handler, type) else type(handler)
    save = next((a for a, h in _SAVE_ARGS.items() if h is handler_cls), None)
    restore = next((a for a, h in _RESTORE_ARGS.items() if h is handler_cls), None)
    if save is None or restore is None:
        missing = " and ".join(kind for kind, found in (("save", save), ("restore", restore))
                               if found is None)
        raise UnregisteredArgsError(
            f"Expected {handler_cls.__name__} to have registered save and restore args, found "
            f"no {missing} args. To fix, decorate its args classes with "
            f"@register_with_handler({handler_cls.__name__}, for_save=True / for_restore=True)."
        )
    return save, restore


def has_registered_args(handler: Any) -> bool:
    """True when both save and restore args are registered for the handler."""
    try:
        get_registered_args_cls(handler)
    except UnregisteredArgsError:
        return False
    return True
