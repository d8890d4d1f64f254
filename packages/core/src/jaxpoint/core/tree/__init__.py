"""Tree layer: key paths, flattening with paths, and rebuilding trees."""

from jaxpoint.core.tree.build import build_tree
from jaxpoint.core.tree.flatten import flatten_with_paths, is_empty_node
from jaxpoint.core.tree.keys import KeyType, TreePath, path_from_jax, validate_path
from jaxpoint.core.tree.placeholder import PLACEHOLDER, Placeholder, is_placeholder

__all__ = [
    "PLACEHOLDER",
    "KeyType",
    "Placeholder",
    "TreePath",
    "build_tree",
    "flatten_with_paths",
    "is_empty_node",
    "is_placeholder",
    "path_from_jax",
    "validate_path",
]
