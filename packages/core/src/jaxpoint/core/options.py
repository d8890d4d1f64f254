"""`ocp.options`: configuration shared by checkpointers and the manager."""

from jaxpoint.core.checkpointers.options import AsyncOptions, MultiprocessingOptions

__all__ = ["AsyncOptions", "MultiprocessingOptions"]
