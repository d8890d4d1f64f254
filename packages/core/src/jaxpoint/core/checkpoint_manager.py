"""`ocp.checkpoint_manager`: Orbax's module of the CheckpointManager and what it takes."""

from typing import Any

from jaxpoint.core.checkpointers import (
    AsyncCheckpointer,
    AsyncOptions,
    Checkpointer,
    MultiprocessingOptions,
    StepMetadata,
)
from jaxpoint.core.errors import StepAlreadyExistsError
from jaxpoint.core.handlers import (
    CheckpointArgs,
    CheckpointHandler,
    CheckpointHandlerRegistry,
    CompositeCheckpointHandler,
    JsonCheckpointHandler,
    ProtoCheckpointHandler,
)
from jaxpoint.core.manager import (
    CheckpointInfo,
    CheckpointManager,
    CheckpointManagerOptions,
    RootMetadata,
)
from jaxpoint.core.manager.items import DEFAULT_ITEM as DEFAULT_ITEM_NAME

PyTree = Any

__all__ = [
    "AsyncCheckpointer", "AsyncOptions", "CheckpointArgs", "CheckpointHandler",
    "CheckpointHandlerRegistry", "CheckpointInfo", "CheckpointManager",
    "CheckpointManagerOptions", "Checkpointer", "DEFAULT_ITEM_NAME", "CompositeCheckpointHandler",
    "JsonCheckpointHandler", "MultiprocessingOptions", "ProtoCheckpointHandler", "PyTree",
    "RootMetadata", "StepAlreadyExistsError", "StepMetadata",
]
