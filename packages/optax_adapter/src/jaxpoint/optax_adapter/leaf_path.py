"""Leaf paths as tuples of strings, the same for a typed state and its saved form."""

from __future__ import annotations

from typing import Any

import jax


def leaf_path(path: Any) -> tuple[str, ...]:
    """A JAX key path as strings: dict keys, sequence indices and attribute names alike.

    A namedtuple's field `mu` and the saved dict key `mu` give the same string, so a
    typed target and a checkpoint restored without a target can be compared.
    """
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            parts.append(str(entry.key))
        else:
            parts.append(str(entry))
    return tuple(parts)


def dotted(path: tuple[str, ...]) -> str:
    """`('1', 'mu', 'w')` as `1.mu.w`, the form jaxpoint's metadata uses."""
    return ".".join(path) or "<root>"
