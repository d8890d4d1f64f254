"""Tree layer: key paths, flattening with paths, rebuilding trees, and Orbax's tree helpers.

`ocp.tree` is this package: the helpers Orbax users call (`to_flat_dict`,
`serialize_tree`, `to_shape_dtype_struct`, ...) live beside the internal ones.
"""

from typing import Any

from jaxpoint.core.tree.abstract import get_param_names, to_shape_dtype_struct
from jaxpoint.core.tree.build import build_tree
from jaxpoint.core.tree.flat_dict import from_flat_dict, is_flat_dict, to_flat_dict
from jaxpoint.core.tree.flatten import flatten_with_paths, is_empty_node
from jaxpoint.core.tree.keys import (
    KeyType,
    TreePath,
    is_dict_key,
    is_sequence_key,
    key_name,
    path_from_jax,
    str_keypath,
    validate_path,
)
from jaxpoint.core.tree.placeholder import PLACEHOLDER, Placeholder, is_placeholder
from jaxpoint.core.tree.serialized import deserialize_tree, serialize_tree

PyTree = Any
JsonType = Any


__all__ = [
    "PLACEHOLDER",
    "JsonType",
    "KeyType",
    "Placeholder",
    "PyTree",
    "TreePath",
    "build_tree",
    "deserialize_tree",
    "flatten_with_paths",
    "from_flat_dict",
    "get_param_names",
    "is_dict_key",
    "is_empty_node",
    "is_flat_dict",
    "is_sequence_key",
    "is_placeholder",
    "key_name",
    "path_from_jax",
    "serialize_tree",
    "str_keypath",
    "to_flat_dict",
    "to_shape_dtype_struct",
    "validate_path",
]
