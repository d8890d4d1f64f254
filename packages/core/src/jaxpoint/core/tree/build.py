"""Rebuilding a nested tree of dicts and lists from stored paths, when no target is given."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jaxpoint.core.errors import CorruptCheckpointError
from jaxpoint.core.tree.keys import KeyType, TreePath


def build_tree(entries: Iterable[tuple[TreePath, Any]]) -> Any:
    """Nests values by their paths; sequence keys become lists in index order."""
    root: dict[str, Any] = {}
    kinds: dict[int, KeyType] = {}
    for path, value in entries:
        if not path.keys:
            return value
        node = root
        for depth, (key, kind) in enumerate(zip(path.keys, path.key_types, strict=True)):
            previous = kinds.setdefault(id(node), kind)
            if previous != kind:
                raise CorruptCheckpointError(
                    f"Tree metadata mixes list and dict keys under {path.keys[:depth]}."
                )
            if depth == len(path.keys) - 1:
                node[key] = value
            else:
                node = node.setdefault(key, {})
    return _lists_from_sequences(root, kinds)


def _lists_from_sequences(node: Any, kinds: dict[int, KeyType]) -> Any:
    if not isinstance(node, dict) or not node:
        return node
    children = {k: _lists_from_sequences(v, kinds) for k, v in node.items()}
    if kinds.get(id(node)) == KeyType.SEQUENCE:
        try:
            ordered = sorted(children.items(), key=lambda kv: int(kv[0]))
        except ValueError as error:
            raise CorruptCheckpointError(f"Non-integer list index in {list(children)}") from error
        return [v for _, v in ordered]
    return children
