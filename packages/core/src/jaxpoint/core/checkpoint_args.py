"""`ocp.checkpoint_args`: the args base class and the args-to-handler registration."""

from jaxpoint.core.handlers import (
    CheckpointArgs,
    CheckpointHandler,
    get_registered_args_cls,
    get_registered_handler_cls,
    has_registered_args,
    register_with_handler,
)

__all__ = ["CheckpointArgs", "CheckpointHandler", "get_registered_args_cls",
           "get_registered_handler_cls", "has_registered_args", "register_with_handler"]
