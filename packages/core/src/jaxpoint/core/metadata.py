"""`ocp.metadata`: the metadata types Orbax code names, from the modules that own them."""

from jaxpoint.core.checkpointers import StepMetadata
from jaxpoint.core.handlers.sharding_metadata import (
    NamedShardingMetadata,
    ShardingMetadata,
    SingleDeviceShardingMetadata,
)
from jaxpoint.core.handlers.tree_metadata_view import (
    ArrayMetadata,
    ScalarMetadata,
    StorageMetadata,
    StringMetadata,
    TreeMetadata,
)
from jaxpoint.core.manager import RootMetadata

__all__ = [
    "ArrayMetadata",
    "NamedShardingMetadata",
    "RootMetadata",
    "ScalarMetadata",
    "ShardingMetadata",
    "SingleDeviceShardingMetadata",
    "StepMetadata",
    "StorageMetadata",
    "StringMetadata",
    "TreeMetadata",
]
