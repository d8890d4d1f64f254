"""Comparing a saved optimizer state with the one a new optimizer builds.

A checkpoint written by `adamw` cannot be restored into `sgd`, or into a chain that grew a
clipping stage: the saved leaves and the target's differ. The check names the first
differing node on each side and the ways out, instead of a bare key error deep in a restore.
"""

from __future__ import annotations

from typing import Any

import jax
import jaxpoint.core as ocp
from jaxpoint.core.handlers import ArrayMetadata, ScalarMetadata, StringMetadata
from jaxpoint.optax_adapter.leaf_path import dotted, leaf_path


class OptStateMismatchError(ocp.TreeMismatchError):
    """The saved optimizer state and the target's have different leaves or shapes."""


_WAYS_OUT = (
    "To fix, restore the optimizer that wrote the checkpoint; or restore the params only "
    "(optax_adapter.restore_args_without_opt_state(target)) and start the optimizer afresh "
    "(optax_adapter.reinitialize_opt_state(tx, params)); or keep "
    "the saved moments wherever the new structure still has them "
    "(optax_adapter.transfer_opt_state(saved, tx.init(params)), with `saved` restored "
    "without a target)."
)


def saved_leaf_paths(saved: Any) -> dict[tuple[str, ...], tuple[int, ...] | None]:
    """Leaf path → shape (None for Python scalars) of a saved tree.

    `saved` is an item's metadata (`manager.item_metadata(step)[item]`) or a tree restored
    without a target; both spell namedtuples as dicts of their fields.
    """
    leaves = jax.tree_util.tree_flatten_with_path(saved, is_leaf=_is_metadata)[0]
    return {leaf_path(path): _shape(leaf) for path, leaf in leaves}


def check_opt_state_structure(saved: Any, target: Any, *, where: str = "opt_state") -> None:
    """Raise OptStateMismatchError when `target` cannot take the leaves of `saved`.

    `where` names the tree path of the optimizer state inside the checkpoint, for the
    message. Empty nodes (`EmptyState()`, `MaskedNode()`) hold no leaves on either side.
    """
    stored = saved_leaf_paths(saved)
    wanted = saved_leaf_paths(target)
    missing = [path for path in wanted if path not in stored]
    extra = [path for path in stored if path not in wanted]
    if missing or extra:
        found_saved = (f"has {where}.{dotted(extra[0])}" if extra
                       else "has no leaf the target lacks")
        found_target = (f"has {where}.{dotted(missing[0])}" if missing
                        else "has no leaf the checkpoint lacks")
        raise OptStateMismatchError(
            f"Expected the saved optimizer state at {where} to have the target's leaves; "
            f"they differ ({len(missing)} only in the target, {len(extra)} only in the "
            f"checkpoint). First differing node: the checkpoint {found_saved}, the target "
            f"{found_target}. The optimizer's structure changed "
            f"(another optimizer, a new chain stage, another mask). {_WAYS_OUT}"
        )
    for path, shape in wanted.items():
        if shape is not None and stored[path] is not None and stored[path] != shape:
            raise OptStateMismatchError(
                f"Expected shape {shape} at {where}.{dotted(path)} (from the target), the "
                f"checkpoint has {stored[path]}. The parameters' shapes changed. {_WAYS_OUT}"
            )


def _is_metadata(node: Any) -> bool:
    return isinstance(node, ArrayMetadata | ScalarMetadata | StringMetadata)


def _shape(leaf: Any) -> tuple[int, ...] | None:
    if isinstance(leaf, ScalarMetadata | StringMetadata | int | float | bool | str):
        return None
    shape = getattr(leaf, "shape", None)
    return None if shape is None else tuple(shape)
