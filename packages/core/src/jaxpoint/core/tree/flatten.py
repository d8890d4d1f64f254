"""Flattening trees with their paths, keeping `None` and empty containers as leaves.

Orbax records `None`, `{}`, `[]` and `()` in a tree's metadata, so they must survive a
round trip; JAX drops them from its leaves, so they are treated as leaves here.
"""

from __future__ import annotations

from typing import Any

import jax
from jaxpoint.core.errors import InvalidNameError
from jaxpoint.core.tree.keys import TreePath, path_from_jax, validate_path


def is_empty_node(value: Any) -> bool:
    """True for `None` and empty dicts, lists and tuples (namedtuples with fields aren't)."""
    if value is None:
        return True
    return isinstance(value, dict | list | tuple) and len(value) == 0


def flatten_with_paths(tree: Any, *, for_reading: bool = False
                       ) -> tuple[list[tuple[TreePath, Any]], Any]:
    """Returns `[(path, leaf), ...]` in JAX's leaf order and the treedef to rebuild the tree.

    `for_reading`: the tree is a restore target, whose keys may hold '/' as Orbax's do.
    """
    pairs, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_empty_node)
    entries = []
    seen: dict[str, TreePath] = {}
    for key_path, leaf in pairs:
        path = path_from_jax(key_path)
        validate_path(path, for_reading=for_reading)
        other = seen.setdefault(path.param_name, path)
        if other is not path:
            raise InvalidNameError(
                f"Tree paths {other} and {path} both store as parameter {path.param_name!r}. "
                "To fix, rename one of the keys so their dotted names differ."
            )
        entries.append((path, leaf))
    return entries, treedef
