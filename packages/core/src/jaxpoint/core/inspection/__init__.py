"""Inspection: what a checkpoint holds (`describe`) and whether it is intact (`verify`).

Read-only and above the checkpointers: the CLI and tools use these, never the handlers'
internals. `list_steps` (the steps of a directory) joins here from `inspection/steps.py`.
"""

from jaxpoint.core.inspection.description import describe
from jaxpoint.core.inspection.verification import ItemReport, VerificationReport, verify

__all__ = ["ItemReport", "VerificationReport", "describe", "verify"]
