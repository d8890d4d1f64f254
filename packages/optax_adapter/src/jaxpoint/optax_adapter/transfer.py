"""Ways out when the optimizer changed: start afresh, or carry over what still fits."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import jax
import numpy as np
import optax
from jaxpoint.optax_adapter.abstract_state import abstract_opt_state
from jaxpoint.optax_adapter.leaf_path import leaf_path

logger = logging.getLogger(__name__)


def reinitialize_opt_state(tx: optax.GradientTransformation, params: Any) -> Any:
    """A fresh state for `tx`, sharded like `abstract_opt_state(tx, params)`.

    The way out when only the params of a checkpoint still fit: restore them (their own
    item, or the whole item without a target), then start the optimizer afresh here.
    """
    shardings = [leaf.sharding for leaf in jax.tree_util.tree_leaves(
        abstract_opt_state(tx, params))]
    fresh = tx.init(params)
    leaves, treedef = jax.tree_util.tree_flatten(fresh)
    placed = [leaf if sharding is None else jax.device_put(leaf, sharding)
              for leaf, sharding in zip(leaves, shardings, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, placed)


def transfer_opt_state(saved: Any, fresh: Any) -> Any:
    """`fresh` (the new `tx.init(params)`) with every leaf the old state still matches.

    `saved` is the old state restored without a target (dicts and lists). A leaf of
    `fresh` takes the saved value whose path, ignoring positions (sequence indices and
    integer keys: chain stages, a pure dict's tuples), is the same and whose shape and
    dtype agree: the Adam moments survive a new clipping stage or a move from adam to
    adamw. Leaves that share a path once positions are ignored (layers of a list) pair up
    in order when both sides have as many. Leaves with no such twin keep their fresh
    value; both counts are logged.
    """
    saved_by_path: dict[tuple[str, ...], list[Any]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(saved)[0]:
        saved_by_path.setdefault(_without_positions(path), []).append(leaf)
    fresh_paths = [_without_positions(path)
                   for path, _ in jax.tree_util.tree_flatten_with_path(fresh)[0]]
    fresh_counts = Counter(fresh_paths)
    seen: Counter[tuple[str, ...]] = Counter()
    kept = 0

    def take(path: Any, leaf: Any) -> Any:
        nonlocal kept
        key = _without_positions(path)
        index = seen[key]
        seen[key] += 1
        twins = saved_by_path.get(key, [])
        if len(twins) != fresh_counts[key]:
            return leaf
        twin = twins[index]
        if np.shape(twin) != np.shape(leaf) or _dtype(twin) != _dtype(leaf):
            return leaf
        kept += 1
        sharding = getattr(leaf, "sharding", None)
        return jax.device_put(twin, sharding) if sharding is not None else twin

    result = jax.tree_util.tree_map_with_path(take, fresh)
    logger.info("transfer_opt_state kept %d of %d optimizer leaves", kept, len(fresh_paths))
    return result


def _without_positions(path: Any) -> tuple[str, ...]:
    return tuple(part for part, entry in zip(leaf_path(path), path, strict=True)
                 if not _is_position(entry))


def _is_position(entry: Any) -> bool:
    if isinstance(entry, jax.tree_util.SequenceKey):
        return True
    if isinstance(entry, jax.tree_util.DictKey):
        key = entry.key
        return (isinstance(key, int) and not isinstance(key, bool)) or (
            isinstance(key, str) and key.isdigit())
    return False


def _dtype(value: Any) -> np.dtype:
    return np.dtype(getattr(value, "dtype", None) or np.result_type(value))
