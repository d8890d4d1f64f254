"""Trees as flat dicts keyed by key tuples (or `sep`-joined strings), as Orbax's helpers do.

Keys are the tree's keys as strings (sequence indices too), so `{"a": [x]}` flattens to
`{("a", "0"): x}`; `from_flat_dict` without a target rebuilds nested dicts only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
from jaxpoint.core.errors import TreeMismatchError
from jaxpoint.core.tree.flatten import is_empty_node
from jaxpoint.core.tree.keys import path_from_jax


def to_flat_dict(tree: Any, sep: str | None = None, keep_empty_nodes: bool = False,
                 is_leaf: Callable[[Any], bool] | None = None) -> dict[Any, Any]:
    """`{key tuple: leaf}` in JAX's leaf order; `sep` joins each key tuple into a string."""
    chosen = is_leaf or (is_empty_node if keep_empty_nodes else None)
    pairs, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=chosen)
    flat = {path_from_jax(key_path).keys: leaf for key_path, leaf in pairs}
    if sep is not None:
        return {sep.join(keys): leaf for keys, leaf in flat.items()}
    return flat


def is_flat_dict(tree: Any) -> bool:
    """True for a dict whose values are all leaves."""
    return isinstance(tree, dict) and all(jax.tree_util.all_leaves([v]) for v in tree.values())


def from_flat_dict(flat_dict: Mapping[Any, Any], target: Any = None, sep: str | None = None,
                   *, inplace: bool = False) -> Any:
    """Rebuilds `target`'s structure from a flat dict, or nested dicts without a target.

    `inplace=True` pops entries from `flat_dict` as they are used (to free memory early).
    """
    if inplace and not isinstance(flat_dict, dict):
        raise TypeError(
            f"Expected a dict for from_flat_dict(inplace=True), got {type(flat_dict).__name__}. "
            "To fix, pass a dict or inplace=False."
        )
    take = flat_dict.pop if inplace else flat_dict.__getitem__  # type: ignore[attr-defined]
    if target is not None:
        wanted = list(to_flat_dict(target, sep=sep))
        absent = [key for key in wanted if key not in flat_dict]
        if absent:
            raise TreeMismatchError(
                f"Expected every key of the target in the flat dict, but {absent[:20]} are "
                f"missing (the flat dict has {list(flat_dict)[:20]}). To fix, flatten a tree "
                "with the target's structure, with the same `sep`."
            )
        return jax.tree.unflatten(jax.tree.structure(target), [take(key) for key in wanted])
    if sep is None and () in flat_dict:
        if len(flat_dict) != 1:
            raise TreeMismatchError(
                f"Expected the empty key () to be the only key of a flat dict, got "
                f"{list(flat_dict)[:20]}. To fix, drop the root entry or the others."
            )
        return take(())
    result: dict[Any, Any] = {}
    for key in list(flat_dict):
        keys = tuple(key.split(sep)) if sep is not None else tuple(key)
        node = result
        for name in keys[:-1]:
            node = node.setdefault(name, {})
        node[keys[-1]] = take(key)
    return result
