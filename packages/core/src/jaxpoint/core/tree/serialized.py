"""Trees as plain nested dicts and lists (JSON- and msgpack-friendly), and back.

Tuples become lists and namedtuples / dataclass nodes become dicts, as in Orbax's
`serialize_tree`; `deserialize_tree` puts values back into a target's structure.
"""

from __future__ import annotations

from typing import Any

import jax
from jaxpoint.core.errors import TreeMismatchError
from jaxpoint.core.tree.flatten import is_empty_node
from jaxpoint.core.tree.keys import is_sequence_key, key_name


def _place(node: Any, key: int | str, value: Any, *, is_sequence: bool) -> Any:
    if is_sequence:
        index = int(key)
        node.extend([None] * (index + 1 - len(node)))
        if node[index] is None:
            node[index] = value
        return node[index]
    return node.setdefault(key, value)


def serialize_tree(tree: Any, keep_empty_nodes: bool = False) -> Any:
    """Nested dicts and lists holding the leaves of `tree` (empty nodes kept on request)."""
    pairs, _ = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=is_empty_node if keep_empty_nodes else None)
    if not pairs:
        raise TreeMismatchError(
            f"Expected a tree with at least one leaf, got {tree!r:.200}: an empty tree has no "
            "unique serialized form. To fix, pass keep_empty_nodes=True or a non-empty tree."
        )
    if not pairs[0][0]:
        return pairs[0][1]
    root: Any = [] if is_sequence_key(pairs[0][0][0]) else {}
    for key_path, leaf in pairs:
        node = root
        for depth, entry in enumerate(key_path):
            last = depth == len(key_path) - 1
            child = leaf if last else ([] if is_sequence_key(key_path[depth + 1]) else {})
            placed = _place(node, key_name(entry), child, is_sequence=is_sequence_key(entry))
            node = placed
    return root


def _child(node: Any, name: int | str) -> Any:
    if isinstance(node, dict):
        return node[name]
    if isinstance(node, list | tuple):
        if not isinstance(name, int):
            raise TypeError(f"a sequence has no key {name!r}")
        return node[name]
    return getattr(node, str(name))


def deserialize_tree(serialized: Any, target: Any, keep_empty_nodes: bool = False) -> Any:
    """`target`'s structure filled with the values found at the same keys in `serialized`."""

    def lookup(key_path: tuple[Any, ...], _: Any) -> Any:
        node = serialized
        for entry in key_path:
            name = key_name(entry)
            try:
                if isinstance(node, dict) and name not in node:
                    name = str(name)
                node = _child(node, name)
            except (KeyError, IndexError, AttributeError, TypeError) as error:
                raise TreeMismatchError(
                    f"Expected key {name!r} at {jax.tree_util.keystr(key_path)} of the "
                    f"serialized tree, found {type(node).__name__} without it. To fix, "
                    "deserialize onto a target with the structure that was serialized."
                ) from error
        return node

    return jax.tree_util.tree_map_with_path(
        lookup, target, is_leaf=is_empty_node if keep_empty_nodes else None)
