"""Handlers and their args: how each kind of item is saved and restored."""

from jaxpoint.core.handlers import handler_registry as handler_registration
from jaxpoint.core.handlers.array_handler import ArrayCheckpointHandler, ArrayRestore, ArraySave
from jaxpoint.core.handlers.base import CheckpointArgs, CheckpointHandler, SaveContext, WriteStep
from jaxpoint.core.handlers.composite import Composite, CompositeCheckpointHandler
from jaxpoint.core.handlers.handler_registry import (
    DefaultCheckpointHandlerRegistry,
    create_default_handler_registry,
)
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
    args_classes_for,
    get_registered_args_cls,
    get_registered_handler_cls,
    has_registered_args,
    is_save_args,
    register_typestr,
    register_with_handler,
)
from jaxpoint.core.handlers.single_replica import (
    SingleReplicaArrayHandler,
    SingleReplicaArrayRestoreArgs,
)
from jaxpoint.core.handlers.standard import StandardCheckpointHandler, StandardRestore, StandardSave
from jaxpoint.core.handlers.tree_metadata_view import ArrayMetadata, ScalarMetadata, StringMetadata

# Orbax's names for the args classes in `ocp.handlers` (`ocp.args` has the short ones).
ArraySaveArgs = ArraySave
CompositeArgs = Composite
JaxRandomKeySaveArgs, JaxRandomKeyRestoreArgs = JaxRandomKeySave, JaxRandomKeyRestore
JsonSaveArgs, JsonRestoreArgs = JsonSave, JsonRestore
NumpyRandomKeySaveArgs, NumpyRandomKeyRestoreArgs = NumpyRandomKeySave, NumpyRandomKeyRestore
ProtoSaveArgs, ProtoRestoreArgs = ProtoSave, ProtoRestore
PyTreeSaveArgs, PyTreeRestoreArgs = PyTreeSave, PyTreeRestore
StandardSaveArgs, StandardRestoreArgs = StandardSave, StandardRestore
CheckpointHandlerRegistry = DefaultCheckpointHandlerRegistry

__all__ = [
    "ArraySaveArgs", "CheckpointHandlerRegistry", "CompositeArgs",
    "DefaultCheckpointHandlerRegistry", "JaxRandomKeyRestoreArgs", "JaxRandomKeySaveArgs",
    "JsonRestoreArgs", "JsonSaveArgs", "NumpyRandomKeyRestoreArgs", "NumpyRandomKeySaveArgs",
    "ProtoRestoreArgs", "ProtoSaveArgs", "PyTreeRestoreArgs", "PyTreeSaveArgs",
    "StandardRestoreArgs", "StandardSaveArgs", "create_default_handler_registry",
    "get_registered_args_cls", "get_registered_handler_cls", "handler_registration",
    "has_registered_args",
    "ArrayCheckpointHandler", "ArrayMetadata", "ArrayRestore", "ArrayRestoreArgs", "ArraySave",
    "CheckpointArgs", "CheckpointHandler", "Composite", "CompositeCheckpointHandler",
    "JaxRandomKeyCheckpointHandler", "JaxRandomKeyRestore", "JaxRandomKeySave",
    "JsonCheckpointHandler", "JsonRestore", "JsonSave", "NumpyRandomKeyCheckpointHandler",
    "NumpyRandomKeyRestore", "NumpyRandomKeySave", "ProtoCheckpointHandler", "ProtoRestore",
    "ProtoSave", "PyTreeCheckpointHandler", "PyTreeRestore", "PyTreeSave", "RestoreArgs",
    "SaveArgs", "SaveContext", "SingleReplicaArrayHandler",
    "SingleReplicaArrayRestoreArgs", "ScalarMetadata", "StandardCheckpointHandler", "StandardRestore",
    "StandardSave", "StringMetadata", "WriteStep", "args_classes_for", "is_save_args",
    "register_typestr", "register_with_handler",
]
