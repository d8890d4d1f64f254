"""Tree paths as jaxpoint and orbax store them: a tuple of string keys plus key types.

A leaf at `state["params"]["w"]` has keys ("params", "w"), key types (DICT, DICT) and the
parameter name "params.w" inside the array database.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Sequence
from typing import Any

import jax
from jaxpoint.core.errors import InvalidNameError


class KeyType(enum.IntEnum):
    """Orbax's `key_type` codes in `_METADATA`."""

    SEQUENCE = 1
    DICT = 2


@dataclasses.dataclass(frozen=True)
class TreePath:
    """Where a leaf sits in a tree."""

    keys: tuple[str, ...]
    key_types: tuple[KeyType, ...]

    @functools.cached_property
    def param_name(self) -> str:  # cached: looked up many times per leaf on large trees
        return ".".join(self.keys)

    @property
    def metadata_key(self) -> str:
        """The `_METADATA` dict key: the Python repr of the key tuple, as orbax writes it."""
        return str(self.keys)

    def __str__(self) -> str:
        return "".join(f"[{k}]" if t == KeyType.SEQUENCE else f"[{k!r}]"
                       for k, t in zip(self.keys, self.key_types, strict=True)) or "<root>"


def path_from_jax(key_path: Sequence[Any]) -> TreePath:
    """Converts a `jax.tree_util` key path into a TreePath."""
    keys, types = [], []
    for entry in key_path:
        if isinstance(entry, jax.tree_util.SequenceKey):
            keys.append(str(entry.idx))
            types.append(KeyType.SEQUENCE)
        elif isinstance(entry, jax.tree_util.DictKey):
            keys.append(str(entry.key))
            types.append(KeyType.DICT)
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            keys.append(entry.name)
            types.append(KeyType.DICT)
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            keys.append(str(entry.key))
            types.append(KeyType.SEQUENCE)
        else:
            keys.append(str(entry))
            types.append(KeyType.DICT)
    return TreePath(tuple(keys), tuple(types))


def validate_path(path: TreePath, *, for_reading: bool = False) -> None:
    """Rejects keys that would break the stored layout or escape the checkpoint folder.

    Writers refuse '/' in a key. Orbax writes such keys (its parameter `a/b.c` is a key of
    the OCDBT database), so readers accept '/' between valid parts: `a/b`, never `../b`.
    """
    for key in path.keys:  # runs per leaf on every save and restore: '/' checked last
        if (not key or key in (".", "..") or "\\" in key or "\x00" in key
                or ("/" in key and not (for_reading and _has_valid_parts(key)))):
            allowed = "with '/' only between other characters" if for_reading else "without '/'"
            raise InvalidNameError(
                f"Expected tree keys {allowed}, without '\\', NUL and not '.', '..' or empty, "
                f"got {key!r} at tree path {path}. Such a key would escape or break the "
                "checkpoint folder. To fix, rename the key."
            )


def _has_valid_parts(key: str) -> bool:
    return all(part not in ("", ".", "..") for part in key.split("/"))
def key_name(entry: Any) -> int | str:
    """A `jax.tree_util` key entry's name: the index of a sequence key, else the key."""
    if isinstance(entry, jax.tree_util.SequenceKey):
        return entry.idx
    if isinstance(entry, jax.tree_util.DictKey):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return entry.name
    if isinstance(entry, jax.tree_util.FlattenedIndexKey):
        return entry.key
    raise InvalidNameError(
        f"Expected a sequence, dict, attribute or flattened-index key, got "
        f"{type(entry).__name__} {entry!r}. To fix, register the node with "
        "jax.tree_util.register_pytree_with_keys."
    )


def str_keypath(key_path: Sequence[Any]) -> tuple[str, ...]:
    """A jax key path as the tuple of string keys that names the leaf when stored."""
    return tuple(str(key_name(entry)) for entry in key_path)


def is_sequence_key(entry: Any) -> bool:
    return isinstance(entry, jax.tree_util.SequenceKey | jax.tree_util.FlattenedIndexKey)


def is_dict_key(entry: Any) -> bool:
    return isinstance(entry, jax.tree_util.DictKey | jax.tree_util.GetAttrKey)
