"""Checkpointers: drive handlers through staging, writing, barriers and commit."""

from jaxpoint.core.checkpointers.async_checkpointer import AsyncCheckpointer
from jaxpoint.core.checkpointers.checkpointer import Checkpointer
from jaxpoint.core.checkpointers.one_call import restore, save
from jaxpoint.core.checkpointers.options import AsyncOptions, MultiprocessingOptions
from jaxpoint.core.checkpointers.save_duration import record_saved_duration
from jaxpoint.core.checkpointers.save_pipeline import SaveJob, ensure_committed
from jaxpoint.core.checkpointers.standard import PyTreeCheckpointer, StandardCheckpointer
from jaxpoint.core.checkpointers.step_metadata import (
    STEP_METADATA_FILE,
    StepMetadata,
    read_step_metadata,
    write_step_metadata,
)

__all__ = [
    "STEP_METADATA_FILE",
    "AsyncCheckpointer",
    "AsyncOptions",
    "Checkpointer",
    "MultiprocessingOptions",
    "PyTreeCheckpointer",
    "SaveJob",
    "StandardCheckpointer",
    "StepMetadata",
    "ensure_committed",
    "read_step_metadata",
    "record_saved_duration",
    "restore",
    "save",
    "write_step_metadata",
]
