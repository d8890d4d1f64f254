"""Transforms: how a tree read from a checkpoint becomes a tree of another structure.

Orbax's semantics (its `transform_utils`): `transformations` maps keys of the new tree,
written as regular expressions over '/'-joined key paths, to `Transform`s. A transform
renames (`original_key`, with regex back-references such as `\\1`), computes a value from
one original value (`value_fn`) or from the whole original tree (`multi_value_fn`), or
keeps the new tree's own value (`use_fallback`). Keys no transform matches are taken from
the original tree (`default_to_original=True`) or from the new tree (False).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
from jaxpoint.core.errors import InvalidArgumentError, TreeMismatchError
from jaxpoint.core.tree.keys import path_from_jax

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Transform:
    """One key of the new tree: renamed, computed, or kept from the new tree.

    `original_key`: the key in the original tree ('/' between levels; a regex key's groups
    may be referenced as `\\1`). `use_fallback`: keep the new tree's value (or, with
    `default_to_original=False`, take the original's at the same key). `value_fn`: applied
    to the original value. `multi_value_fn(key, original_tree)`: computes the value.
    """

    original_key: str | tuple[str, ...] | None = None
    use_fallback: bool = False
    value_fn: Callable[..., Any] | None = None
    multi_value_fn: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        given = [name for name, value in (
            ("original_key", self.original_key), ("use_fallback", self.use_fallback or None),
            ("value_fn", self.value_fn), ("multi_value_fn", self.multi_value_fn)) if value is not None]
        allowed = {("original_key", "value_fn")}
        if len(given) > 1 and tuple(given) not in allowed:
            raise InvalidArgumentError(
                f"Expected a {type(self).__name__} with one of original_key (optionally with "
                f"value_fn), value_fn, multi_value_fn or use_fallback, got {' and '.join(given)}. "
                "To fix, split it into one transform per key, or drop the extra fields."
            )

    @property
    def original_pattern(self) -> str | None:
        """`original_key` as one '/'-joined string."""
        key = self.original_key
        return "/".join(key) if isinstance(key, tuple) else key


@dataclasses.dataclass
class RestoreTransform(Transform):
    """A transform for restores: `multi_value_fn(key, original_tree, restore_args)`.

    `multi_value_fn_input_args`: regex over original keys -> the RestoreArgs to read them
    with; a restore reads only the original leaves some transform needs, so a
    `multi_value_fn` must name its inputs here.
    """

    multi_value_fn_input_args: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.multi_value_fn_input_args is not None and self.multi_value_fn is None:
            raise InvalidArgumentError(
                "Expected multi_value_fn_input_args only together with multi_value_fn, got "
                "them without it. To fix, pass multi_value_fn, or drop multi_value_fn_input_args."
            )


def key_string(key_path: Any) -> str:
    """A jax key path as Orbax's flat key: the keys joined by '/'."""
    return "/".join(path_from_jax(key_path).keys)


def flat_leaves(tree: Any, *, is_leaf: Callable[[Any], bool] | None = None
                ) -> tuple[dict[str, Any], Any]:
    """`{'a/b': leaf}` in leaf order, and the treedef. None is not a leaf, as in JAX."""
    pairs, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {key_string(path): leaf for path, leaf in pairs}, treedef


def flat_transforms(transformations: Any) -> dict[str, Transform]:
    """The transforms by '/'-joined key (regex) of the new tree; rejects non-transforms."""
    flat, _ = flat_leaves(transformations, is_leaf=lambda x: isinstance(x, Transform))
    for key, value in flat.items():
        if not isinstance(value, Transform):
            raise InvalidArgumentError(
                f"Expected a Transform at key {key!r} of transforms, got {type(value).__name__}. "
                "To fix, map every key of transforms to Transform(...) or RestoreTransform(...)."
            )
    return flat


def apply_flat(original: Mapping[str, Any], transforms: Mapping[str, Transform],
               new: dict[str, Any], *, default_to_original: bool,
               multi_value: Callable[[Callable[..., Any], str], Any]) -> dict[str, Any]:
    """Orbax's transformation of flat trees; `multi_value(multi_value_fn, key)` runs a
    transform's `multi_value_fn`. Returns `new` with its values replaced."""
    unmatched = []
    for key in new:
        found = False
        for pattern, transform in transforms.items():
            match = re.fullmatch(pattern, key)
            if not match:
                continue
            found = True
            if transform.use_fallback:
                if not default_to_original:
                    new[key] = _original(original, key, key, pattern)
            elif transform.multi_value_fn is not None:
                new[key] = multi_value(transform.multi_value_fn, key)
            else:
                source_pattern = transform.original_pattern
                source = key if source_pattern is None else match.expand(source_pattern)
                value = _original(original, source, key, pattern)
                new[key] = value if transform.value_fn is None else transform.value_fn(value)
        if not found:
            if key in original:
                if default_to_original:
                    new[key] = original[key]
            else:
                unmatched.append(key)
    if unmatched:
        logger.info("Keys kept from the new tree, found neither in the original tree nor in "
                    "the transforms: %s", ", ".join(unmatched))
    return new


def _original(original: Mapping[str, Any], source: str, key: str, pattern: str) -> Any:
    if source not in original:
        raise TreeMismatchError(
            f"Expected key {source!r} in the original tree for key {key!r} of the new tree "
            f"(transform {pattern!r}), found no such key; it has {sorted(original)[:20]}. To fix, "
            "correct the transform's original_key (or regex), or use Transform(use_fallback=True) "
            "to keep the new tree's value."
        )
    return original[source]


def apply_transformations(original_tree: Any, transformations: Any, new_tree: Any,
                          default_to_original: bool | None = True) -> Any:
    """The tree of `new_tree`'s structure that `transformations` make from `original_tree`.

    >>> apply_transformations({"a": 1, "b": 2}, {"c": Transform(original_key="a")},
    ...                       {"b": 0, "c": 0})
    {'b': 2, 'c': 1}
    """
    if not jax.tree_util.tree_leaves(new_tree) and not new_tree:
        return {}
    original, _ = flat_leaves(original_tree)
    new, treedef = flat_leaves(new_tree)

    def multi_value(multi_value_fn: Callable[..., Any], key: str) -> Any:
        return multi_value_fn(key, original_tree)

    result = apply_flat(original, flat_transforms(transformations), new,
                        default_to_original=bool(default_to_original), multi_value=multi_value)
    return jax.tree_util.tree_unflatten(treedef, list(result.values()))


def _from_flat(flat: Mapping[tuple[str, ...], Any], target: Any) -> Any:
    if target is not None:
        pairs, treedef = jax.tree_util.tree_flatten_with_path(target)
        return jax.tree_util.tree_unflatten(
            treedef, [flat.get(tuple(path_from_jax(path).keys)) for path, _ in pairs])
    result: dict[str, Any] = {}
    for keys, value in flat.items():
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return result


def _flat_tuples(tree: Any) -> dict[tuple[str, ...], Any]:
    pairs, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(path_from_jax(path).keys): leaf for path, leaf in pairs}


def merge_trees(*trees: Any, target: Any = None) -> Any:
    """One tree with the leaves of all `trees`; a later tree wins a shared key."""
    merged: dict[tuple[str, ...], Any] = {}
    for tree in trees:
        merged.update(_flat_tuples(tree))
    return _from_flat(merged, target)


def intersect_trees(*trees: Any, target: Any = None) -> Any:
    """The keys every tree has, with the last tree's values (as `target`'s structure)."""
    flats = [_flat_tuples(tree) for tree in trees]
    if not flats:
        return _from_flat({}, target)
    common = set.intersection(*(set(flat) for flat in flats))
    return _from_flat({key: value for key, value in flats[-1].items() if key in common}, target)
