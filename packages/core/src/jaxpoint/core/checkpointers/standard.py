"""Ready-made checkpointers for the common handlers, as orbax names them."""

from __future__ import annotations

from typing import Any

from jaxpoint.core.checkpointers.async_checkpointer import AsyncCheckpointer
from jaxpoint.core.checkpointers.checkpointer import Checkpointer
from jaxpoint.core.handlers import (
    PyTreeCheckpointHandler,
    PyTreeRestore,
    PyTreeSave,
    StandardCheckpointHandler,
    StandardRestore,
    StandardSave,
)


class StandardCheckpointer(AsyncCheckpointer):
    """Async checkpointer of StandardSave/StandardRestore; `save(path, tree)` also works."""

    _raw_save_args = StandardSave
    _raw_restore_args = StandardRestore

    def __init__(self, **options: Any) -> None:
        super().__init__(StandardCheckpointHandler(), **options)


class PyTreeCheckpointer(Checkpointer):
    """Sync checkpointer of PyTreeSave/PyTreeRestore; `save(path, tree)` also works."""

    _raw_save_args = PyTreeSave
    _raw_restore_args = PyTreeRestore

    def __init__(self, **options: Any) -> None:
        super().__init__(PyTreeCheckpointHandler(), **options)
