"""Checkpointers: drive handlers through staging, writing, barriers and commit."""

from jaxpoint.core.checkpointers.async_checkpointer import AsyncCheckpointer
from jaxpoint.core.checkpointers.checkpointer import Checkpointer
from jaxpoint.core.checkpointers.one_call import restore, save
from jaxpoint.core.checkpointers.options import AsyncOptions, MultiprocessingOptions
from jaxpoint.core.checkpointers.standard import PyTreeCheckpointer, StandardCheckpointer
from jaxpoint.core.checkpointers.step_metadata import StepMetadata
from jaxpoint.core.checkpointers.verification import ItemReport, VerificationReport, verify

__all__ = [
    "AsyncCheckpointer",
    "AsyncOptions",
    "Checkpointer",
    "ItemReport",
    "MultiprocessingOptions",
    "PyTreeCheckpointer",
    "StandardCheckpointer",
    "StepMetadata",
    "VerificationReport",
    "restore",
    "save",
    "verify",
]
