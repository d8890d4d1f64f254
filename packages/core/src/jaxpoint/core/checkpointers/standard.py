"""Ready-made checkpointers for the common handlers, as orbax names them."""

from __future__ import annotations

from typing import Any

from jaxpoint.core.checkpointers.async_checkpointer import AsyncCheckpointer
from jaxpoint.core.checkpointers.checkpointer import Checkpointer
from jaxpoint.core.handlers import PyTreeCheckpointHandler, StandardCheckpointHandler


class StandardCheckpointer(AsyncCheckpointer):
    """Async checkpointer of StandardSave/StandardRestore.

    `save(path, tree, save_args=...)` and `restore(path, target, strict=...)` are its
    documented Orbax signature, so they work without a deprecation warning.
    """

    _positional_form_is_current = True

    def __init__(self, **options: Any) -> None:
        super().__init__(StandardCheckpointHandler(), **options)


class PyTreeCheckpointer(Checkpointer):
    """Sync checkpointer of PyTreeSave/PyTreeRestore; `save(path, tree)` is Orbax's legacy form."""

    def __init__(self, **options: Any) -> None:
        super().__init__(PyTreeCheckpointHandler(), **options)
