"""`ocp.type_handlers`: the per-leaf TypeHandler protocol, its registry and leaf args."""

from jaxpoint.core.handlers.leaf_args import ArrayRestoreArgs, RestoreArgs, SaveArgs
from jaxpoint.core.handlers.single_replica import (
    SingleReplicaArrayHandler,
    SingleReplicaArrayRestoreArgs,
)
from jaxpoint.core.handlers.type_handler import (
    ArrayHandler,
    NumpyHandler,
    ParamInfo,
    ScalarHandler,
    StringHandler,
    TypeHandler,
)
from jaxpoint.core.handlers.type_registry import (
    TypeHandlerRegistry,
    create_type_handler_registry,
    get_type_handler,
    has_type_handler,
    register_type_handler,
    supported_types,
)
from jaxpoint.core.storage.ocdbt_merge import is_ocdbt_checkpoint

__all__ = [
    "ArrayHandler", "ArrayRestoreArgs", "NumpyHandler", "ParamInfo", "RestoreArgs", "SaveArgs",
    "ScalarHandler", "SingleReplicaArrayHandler", "SingleReplicaArrayRestoreArgs",
    "StringHandler", "TypeHandler", "TypeHandlerRegistry", "create_type_handler_registry",
    "get_type_handler", "has_type_handler", "is_ocdbt_checkpoint", "register_type_handler",
    "supported_types",
]
