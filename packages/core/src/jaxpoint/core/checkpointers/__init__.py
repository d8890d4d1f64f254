"""Checkpointers: drive handlers through staging, writing, barriers and commit."""

from jaxpoint.core.checkpointers.async_checkpointer import AsyncCheckpointer
from jaxpoint.core.checkpointers.checkpointer import Checkpointer
from jaxpoint.core.checkpointers.one_call import restore, save
from jaxpoint.core.checkpointers.options import AsyncOptions, MultiprocessingOptions
from jaxpoint.core.checkpointers.save_duration import record_saved_duration
from jaxpoint.core.checkpointers.standard import PyTreeCheckpointer, StandardCheckpointer
from jaxpoint.core.checkpointers.step_metadata import StepMetadata

__all__ = [
    "AsyncCheckpointer",
    "AsyncOptions",
    "Checkpointer",
    "MultiprocessingOptions",
    "PyTreeCheckpointer",
    "StandardCheckpointer",
    "StepMetadata",
    "record_saved_duration",
    "restore",
    "save",
]
