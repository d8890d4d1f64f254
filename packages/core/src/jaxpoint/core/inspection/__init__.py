"""Inspection: what a checkpoint directory holds, read cheaply and without writing."""

from jaxpoint.core.inspection.step_names import (
    CompositeStepNameFormat,
    StandardStepNameFormat,
    StepNameFormat,
    composite_name_format,
    standard_name_format,
)
from jaxpoint.core.inspection.steps import DamagedStep, StepListing, list_steps

__all__ = [
    "CompositeStepNameFormat",
    "DamagedStep",
    "StandardStepNameFormat",
    "StepListing",
    "StepNameFormat",
    "composite_name_format",
    "list_steps",
    "standard_name_format",
]
