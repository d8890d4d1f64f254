"""jaxpoint.core: fast, atomic, Orbax-compatible checkpointing for JAX.

`import jaxpoint.core as ocp` runs code written for orbax-checkpoint's `args=` API.
"""

from jaxpoint.core import args, errors, multihost
from jaxpoint.core.checkpointers import (
    AsyncCheckpointer,
    AsyncOptions,
    Checkpointer,
    MultiprocessingOptions,
    PyTreeCheckpointer,
    StandardCheckpointer,
    StepMetadata,
    restore,
    save,
)
from jaxpoint.core.errors import (
    BarrierTimeoutError,
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    StepAlreadyExistsError,
    StepNotFoundError,
    TreeMismatchError,
    UncommittedCheckpointError,
)
from jaxpoint.core.handlers import (
    ArrayCheckpointHandler,
    ArrayMetadata,
    ArrayRestoreArgs,
    CheckpointHandler,
    CompositeCheckpointHandler,
    JaxRandomKeyCheckpointHandler,
    JsonCheckpointHandler,
    NumpyRandomKeyCheckpointHandler,
    ProtoCheckpointHandler,
    PyTreeCheckpointHandler,
    RestoreArgs,
    SaveArgs,
    StandardCheckpointHandler,
    register_with_handler,
)

__all__ = [
    "ArrayCheckpointHandler", "ArrayMetadata", "ArrayRestoreArgs", "AsyncCheckpointer",
    "AsyncOptions", "BarrierTimeoutError", "CheckpointError", "CheckpointExistsError",
    "CheckpointHandler", "CheckpointNotFoundError", "Checkpointer", "CompositeCheckpointHandler",
    "CorruptCheckpointError", "JaxRandomKeyCheckpointHandler", "JsonCheckpointHandler",
    "MultiprocessingOptions", "NumpyRandomKeyCheckpointHandler", "ProtoCheckpointHandler",
    "PyTreeCheckpointHandler", "PyTreeCheckpointer", "RestoreArgs", "SaveArgs",
    "StandardCheckpointHandler", "StandardCheckpointer", "StepAlreadyExistsError", "StepMetadata",
    "StepNotFoundError", "TreeMismatchError", "UncommittedCheckpointError", "args", "errors",
    "multihost", "register_with_handler", "restore", "save",
]
