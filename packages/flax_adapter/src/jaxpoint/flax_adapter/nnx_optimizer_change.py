"""Resuming NNX objects whose `nnx.Optimizer` changed since the checkpoint was written.

The saved tree is the objects' pure dict; each optimizer's Optax state sits under its graph
path, at `<path>.opt_state`. "raise" names the first differing node of the first optimizer
that no longer fits; "reinitialize" restores everything else (the parameters, batch
statistics, RNG streams, the optimizer's step) and leaves each changed optimizer with the
state it was built with; "transfer" also keeps every saved optimizer leaf that still fits
(`optax_adapter.transfer_opt_state` on the two pure dicts). A checkpoint with `{'value': ...}`
wrappers (Orbax's `nnx.state(model)`) is unwrapped by the caller first, so both forms
take this path.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
from flax import nnx
from jaxpoint.optax_adapter import (
    OptStateMismatchError,
    check_opt_state_structure,
    dotted,
    transfer_opt_state,
)

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
        if stored is None:
            continue
        # A pure dict leaves out an optimizer state without leaves (plain sgd).
        wanted = _lookup(live_pure, (*path, _OPT_STATE)) or {}
        try:
            check_opt_state_structure(stored, wanted, where=f"state.{dotted((*path, _OPT_STATE))}")
        except OptStateMismatchError as error:
            return error
    return None


def raise_for_changed_optimizer(error: OptStateMismatchError) -> None:
    raise OptStateMismatchError(
        f"{error} With attach, pass optimizer_changed='reinitialize' (the optimizer keeps "
        "the state it was built with) or optimizer_changed='transfer'.") from None


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


def transferred(saved: Any, live_pure: dict[Any, Any],
                paths: list[tuple[str, ...]]) -> dict[Any, Any]:
    """The pure dict to write back: `saved` (the whole state restored without a target)
    placed like `live_pure`, each optimizer's state carried over by `transfer_opt_state`."""
    opt_states = {(*path, _OPT_STATE) for path in paths}

    def build(stored: Any, live: Any, where: tuple[str, ...]) -> Any:
        if where in opt_states:
            return transfer_opt_state({} if stored is None else stored, live)
        if live is None:
            return None
        if isinstance(live, dict):
            return {key: build(_lookup(stored, (str(key),)), value, (*where, str(key)))
                    for key, value in live.items()}
        return _placed_like(stored, live, where)

    return build(saved, live_pure, ())


def _placed_like(stored: Any, live: Any, where: tuple[str, ...]) -> Any:
    if stored is None or np.shape(stored) != np.shape(live):
        found = "nothing" if stored is None else f"shape {np.shape(stored)}"
        raise ocp.TreeMismatchError(
            f"Expected the checkpoint to hold state.{dotted(where)} with shape "
            f"{np.shape(live)}, found {found}. Only the optimizer may change when resuming "
            "with optimizer_changed='transfer'. To fix, build the model the checkpoint was "
            "written with.")
    if not isinstance(live, jax.Array):
        return type(live)(stored)
    if not jax.dtypes.issubdtype(live.dtype, jax.dtypes.prng_key):
        stored = jnp.asarray(stored, dtype=live.dtype)
    return jax.device_put(stored, live.sharding)


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(tree, dict):
            return None
        matches = [value for key, value in tree.items() if str(key) == part]
        if not matches:
            return None
        tree = matches[0]
    return tree
