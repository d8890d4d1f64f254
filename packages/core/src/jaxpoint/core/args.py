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
    register_with_handler,
)

__all__ = [
    "ArrayRestore", "ArraySave", "CheckpointArgs", "Composite", "JaxRandomKeyRestore",
    "JaxRandomKeySave", "JsonRestore", "JsonSave", "NumpyRandomKeyRestore", "NumpyRandomKeySave",
    "ProtoRestore", "ProtoSave", "PyTreeRestore", "PyTreeSave", "StandardRestore", "StandardSave",
    "register_with_handler",
]
