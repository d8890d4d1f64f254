"""Resuming NNX objects whose `nnx.Optimizer` changed since the checkpoint was written.

The saved tree is the objects' pure dict; each optimizer's Optax state sits under its graph
path, at `<path>.opt_state`. "raise" names the first differing node of the first optimizer
that no longer fits; "reinitialize" restores everything else (the parameters, batch
statistics, RNG streams, the optimizer's step) and leaves each changed optimizer with the
state it was built with. "transfer" is refused: a pure dict does not keep the Optax state
types that `transfer_opt_state` matches leaves by.
"""

from __future__ import annotations

from typing import Any

from flax import nnx
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.optax_adapter import OptStateMismatchError, check_opt_state_structure, dotted

_OPT_STATE = "opt_state"


def optimizer_paths(obj: Any) -> list[tuple[str, ...]]:
    """The graph paths of the `nnx.Optimizer`s in `obj` (a node or a tuple of nodes)."""
    node = tuple(obj) if isinstance(obj, list) else obj
    return [tuple(str(part) for part in path) for path, value in nnx.iter_graph(node)
            if isinstance(value, nnx.Optimizer)]


def changed_optimizer_error(saved: Any, live_pure: Any,
                            paths: list[tuple[str, ...]]) -> OptStateMismatchError | None:
    """The mismatch of the first optimizer whose saved state no longer fits, else None.

    `saved` is the item's metadata, `live_pure` the live objects' pure dict. An optimizer
    the checkpoint does not hold at all is left to the restore's own error.
    """
    saved = getattr(saved, "tree", saved)  # metadata(path).item_metadata is a TreeMetadata
    for path in paths:
        stored = _lookup(saved, (*path, _OPT_STATE))
        wanted = _lookup(live_pure, (*path, _OPT_STATE))
        if stored is None or wanted is None:
            continue
        try:
            check_opt_state_structure(stored, wanted, where=f"state.{dotted((*path, _OPT_STATE))}")
        except OptStateMismatchError as error:
            return error
    return None


def raise_for_changed_optimizer(error: OptStateMismatchError) -> None:
    raise OptStateMismatchError(
        f"{error} With attach and NNX objects, pass optimizer_changed='reinitialize' to "
        "restore everything else and keep the optimizer's freshly built state.") from None


def refuse_transfer() -> None:
    raise InvalidArgumentError(
        "Expected optimizer_changed='raise' or 'reinitialize' for NNX objects whose "
        "optimizer changed, got 'transfer': their pure dict does not keep the Optax state "
        "types that moments are matched by. To fix, pass optimizer_changed='reinitialize', "
        "or restore the old state without a target and copy the moments you need with "
        "optax_adapter.transfer_opt_state.")


def without_opt_states(live_pure: dict[Any, Any],
                       paths: list[tuple[str, ...]]) -> dict[Any, Any]:
    """`live_pure` without the optimizers' Optax states: the partial restore target."""
    def prune(tree: Any, prefix: tuple[str, ...]) -> Any:
        if not isinstance(tree, dict):
            return tree
        kept = {}
        for key, value in tree.items():
            here = (*prefix, str(key))
            if key == _OPT_STATE and prefix in paths:
                continue
            kept[key] = prune(value, here)
        return kept

    return prune(live_pure, ())


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(tree, dict):
            return None
        matches = [value for key, value in tree.items() if str(key) == part]
        if not matches:
            return None
        tree = matches[0]
    return tree
