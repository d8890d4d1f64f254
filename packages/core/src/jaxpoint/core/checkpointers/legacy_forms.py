"""Orbax's legacy call forms: an item and keywords given instead of one args object.

Orbax 0.12 still builds the handler's registered args class from whatever a caller passes
to `save` / `restore` (`ckptr.save(path, tree, save_args=...)` means
`args=PyTreeSave(tree, save_args=...)`), and much published code relies on it. These
forms are mapped here onto the one modern path; nothing below the mapping knows they
exist. Each form logs one deprecation warning per process, through `logging` as Orbax
does, so that a user sees it without configuring Python's warning filters.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from jaxpoint.core.errors import InvalidArgumentError, UnregisteredArgsError
from jaxpoint.core.handlers import CheckpointArgs, args_classes_for

logger = logging.getLogger(__name__)

_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_deprecated_form(form: str, modern: str) -> None:
    """Logs, once per process for each `form`, that it is deprecated and what replaces it."""
    with _warned_lock:
        if form in _warned:
            return
        _warned.add(form)
    logger.warning("%s is a deprecated Orbax call form; jaxpoint runs it as %s. To migrate, "
                   "write the latter (this warning is logged once per process).", form, modern)


def forget_warnings() -> None:
    """Lets every form warn again (for tests that check the one warning)."""
    with _warned_lock:
        _warned.clear()


def build_args(handler: Any, positional: Sequence[Any], keywords: Mapping[str, Any], *,
               for_save: bool, where: str) -> CheckpointArgs:
    """The handler's registered save (or restore) args built from legacy pieces."""
    save_cls, restore_cls = args_classes_for(handler)
    cls = save_cls if for_save else restore_cls
    if cls is None:
        raise InvalidArgumentError(
            f"Expected a handler with registered {'save' if for_save else 'restore'} args for "
            f"the legacy form of {where}, got {type(handler).__name__}, which has none. To fix, "
            "pass args=... explicitly, or register your args class with @register_with_handler."
        )
    try:
        return cls(*positional, **keywords)
    except TypeError as error:
        raise InvalidArgumentError(
            f"Expected the legacy arguments of {where} to fit {cls.__name__}, got "
            f"{len(positional)} positional and keywords {sorted(keywords)}: {error}. To fix, "
            f"pass args={cls.__name__}(...) with its fields."
        ) from error


def checkpointer_args(handler: Any, args: Any, positional: Sequence[Any],
                      keywords: Mapping[str, Any], *, for_save: bool, where: str,
                      is_current_form: bool) -> Any:
    """`args` as given, or built from the legacy form `where(path, item, **keywords)`.

    A lone positional CheckpointArgs counts as `args=` (Orbax accepts it too).
    `is_current_form`: the checkpointer documents the positional form as its own (Orbax's
    StandardCheckpointer does), so it is mapped without a deprecation warning.
    """
    if args is not None and not isinstance(args, CheckpointArgs):
        raise UnregisteredArgsError(
            f"Expected a CheckpointArgs object for args= in {where}, got "
            f"{type(args).__name__}. To fix, pass args=ocp.args.StandardSave(tree) (or the "
            "args of your handler)."
        )
    if args is None and len(positional) == 1 and isinstance(positional[0], CheckpointArgs):
        args, positional = positional[0], ()
    if args is not None:
        if positional or keywords:
            raise InvalidArgumentError(
                f"Expected either args=... or the legacy item and keywords in {where}, got "
                f"both: args={type(args).__name__} and {len(positional)} more positional, "
                f"keywords {sorted(keywords)}. To fix, move those into the args object."
            )
        return args
    if not positional and not keywords:
        return None
    built = build_args(handler, positional, keywords, for_save=for_save, where=where)
    if not is_current_form:
        warn_deprecated_form(f"{where}(path, item, **kwargs)",
                             f"{where}(path, args={type(built).__name__}(...))")
    return built
