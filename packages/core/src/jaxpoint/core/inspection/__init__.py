"""Inspection: what a checkpoint directory holds, read without writing.

`list_steps` (the committed, unfinished and damaged entries of a directory, read
cheaply), the step-name formats, `describe` (the item tree of a step or item as plain
data) and `verify` (read everything back and check it). Read-only and above the
checkpointers: the CLI and tools use these, never the handlers' internals.
"""

from jaxpoint.core.inspection.description import describe
from jaxpoint.core.inspection.step_names import (
    CompositeStepNameFormat,
    StandardStepNameFormat,
    StepNameFormat,
    composite_name_format,
    standard_name_format,
)
from jaxpoint.core.inspection.steps import DamagedStep, StepListing, list_steps
from jaxpoint.core.inspection.verification import ItemReport, VerificationReport, verify

__all__ = [
    "CompositeStepNameFormat",
    "DamagedStep",
    "ItemReport",
    "StandardStepNameFormat",
    "StepListing",
    "StepNameFormat",
    "VerificationReport",
    "composite_name_format",
    "describe",
    "list_steps",
    "standard_name_format",
    "verify",
]
