"""`ocp.tree`: Orbax's public tree helpers (`to_flat_dict`, `serialize_tree`, ...).

This package is also jaxpoint's lowest layer: key paths, flattening with paths and
rebuilding trees live in its submodules, which the rest of `jaxpoint.core` imports
directly. Only the names below are public; the submodules are not (the import-linter
contract in pyproject.toml keeps packages outside jaxpoint.core off them).
"""

from typing import Any

from jaxpoint.core.tree.abstract import get_param_names, to_shape_dtype_struct
from jaxpoint.core.tree.flat_dict import from_flat_dict, is_flat_dict, to_flat_dict
from jaxpoint.core.tree.keys import str_keypath
from jaxpoint.core.tree.serialized import deserialize_tree, serialize_tree

PyTree = Any
JsonType = Any


__all__ = [
    "JsonType",
    "PyTree",
    "deserialize_tree",
    "from_flat_dict",
    "get_param_names",
    "is_flat_dict",
    "serialize_tree",
    "str_keypath",
    "to_flat_dict",
    "to_shape_dtype_struct",
]
