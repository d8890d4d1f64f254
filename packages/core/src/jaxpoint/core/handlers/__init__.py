"""Handlers and their args: how each kind of item is saved and restored."""

from jaxpoint.core.handlers.array_handler import ArrayCheckpointHandler, ArrayRestore, ArraySave
from jaxpoint.core.handlers.base import CheckpointArgs, CheckpointHandler, SaveContext, WriteStep
from jaxpoint.core.handlers.composite import Composite, CompositeCheckpointHandler
from jaxpoint.core.handlers.json_handler import JsonCheckpointHandler, JsonRestore, JsonSave
from jaxpoint.core.handlers.leaf_args import ArrayRestoreArgs, RestoreArgs, SaveArgs
from jaxpoint.core.handlers.proto_handler import ProtoCheckpointHandler, ProtoRestore, ProtoSave
from jaxpoint.core.handlers.pytree import PyTreeCheckpointHandler, PyTreeRestore, PyTreeSave
from jaxpoint.core.handlers.random_key import (
    JaxRandomKeyCheckpointHandler,
    JaxRandomKeyRestore,
    JaxRandomKeySave,
    NumpyRandomKeyCheckpointHandler,
    NumpyRandomKeyRestore,
    NumpyRandomKeySave,
)
from jaxpoint.core.handlers.registry import (
    register_typestr,
    register_with_handler,
)
from jaxpoint.core.handlers.single_replica import (
    SingleReplicaArrayHandler,
    SingleReplicaArrayRestoreArgs,
)
from jaxpoint.core.handlers.standard import StandardCheckpointHandler, StandardRestore, StandardSave
from jaxpoint.core.handlers.tree_metadata_view import ArrayMetadata, ScalarMetadata, StringMetadata

__all__ = [
    "ArrayCheckpointHandler", "ArrayMetadata", "ArrayRestore", "ArrayRestoreArgs", "ArraySave",
    "CheckpointArgs", "CheckpointHandler", "Composite", "CompositeCheckpointHandler",
    "JaxRandomKeyCheckpointHandler", "JaxRandomKeyRestore", "JaxRandomKeySave",
    "JsonCheckpointHandler", "JsonRestore", "JsonSave", "NumpyRandomKeyCheckpointHandler",
    "NumpyRandomKeyRestore", "NumpyRandomKeySave", "ProtoCheckpointHandler", "ProtoRestore",
    "ProtoSave", "PyTreeCheckpointHandler", "PyTreeRestore", "PyTreeSave", "RestoreArgs",
    "SaveArgs", "SaveContext", "SingleReplicaArrayHandler",
    "SingleReplicaArrayRestoreArgs", "ScalarMetadata", "StandardCheckpointHandler", "StandardRestore",
    "StandardSave", "StringMetadata", "WriteStep", "register_typestr", "register_with_handler",
]
