"""`ocp.args`: every save and restore args class, as orbax-checkpoint names them."""

from jaxpoint.core.handlers import (
    ArrayRestore,
    ArraySave,
    CheckpointArgs,
    Composite,
    JaxRandomKeyRestore,
    JaxRandomKeySave,
    JsonRestore,
    JsonSave,
    NumpyRandomKeyRestore,
    NumpyRandomKeySave,
    ProtoRestore,
    ProtoSave,
    PyTreeRestore,
    PyTreeSave,
    StandardRestore,
    StandardSave,
    get_registered_args_cls,
    get_registered_handler_cls,
    has_registered_args,
    register_with_handler,
)

__all__ = [
    "ArrayRestore", "ArraySave", "CheckpointArgs", "Composite", "JaxRandomKeyRestore",
    "JaxRandomKeySave", "JsonRestore", "JsonSave", "NumpyRandomKeyRestore", "NumpyRandomKeySave",
    "ProtoRestore", "ProtoSave", "PyTreeRestore", "PyTreeSave", "StandardRestore", "StandardSave",
    "get_registered_args_cls", "get_registered_handler_cls", "has_registered_args",
    "register_with_handler",
]
