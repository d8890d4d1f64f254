"""Resuming a linen TrainState whose optimizer changed since the checkpoint was written.

`attach(..., optimizer_changed=...)` picks what happens when the saved `opt_state` does not
fit the trainer's optimizer: "raise" (the default) names the first differing node;
"reinitialize" restores everything else and starts the optimizer afresh; "transfer" also
keeps every saved leaf that still fits (Adam moments across a new clipping stage).
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.optax_adapter import (
    OptStateMismatchError,
    check_opt_state_structure,
    reinitialize_opt_state,
    transfer_opt_state,
    without_opt_state,
)

OptimizerChange = Literal["raise", "reinitialize", "transfer"]
CHOICES = ("raise", "reinitialize", "transfer")


def validated_choice(choice: str) -> OptimizerChange:
    if choice not in CHOICES:
        raise InvalidArgumentError(
            f"Expected optimizer_changed to be one of {CHOICES}, got {choice!r}. To fix, "
            "pass 'raise' to stop, 'reinitialize' to start the optimizer afresh, or "
            "'transfer' to keep the saved moments that still fit.")
    return choice  # type: ignore[return-value]


def has_changed_optimizer(saved: Any, target: Any) -> bool:
    """Whether `target` is a TrainState-like object whose opt_state no longer fits."""
    if not (hasattr(target, "opt_state") and hasattr(target, "tx")):
        return False
    saved = getattr(saved, "tree", saved)  # metadata(path).item_metadata is a TreeMetadata
    if not isinstance(saved, dict) or "opt_state" not in saved:
        return False
    try:
        check_opt_state_structure(saved["opt_state"], target.opt_state, where="state.opt_state")
    except OptStateMismatchError:
        return True
    return False


def raise_for_changed_optimizer(saved: Any, target: Any) -> None:
    """The error of `check_opt_state_structure`, with the attach-level way out added."""
    saved = getattr(saved, "tree", saved)
    try:
        check_opt_state_structure(saved["opt_state"], target.opt_state, where="state.opt_state")
    except OptStateMismatchError as error:
        raise OptStateMismatchError(
            f"{error} With attach, pass optimizer_changed='reinitialize' or "
            "optimizer_changed='transfer'.") from None


def kept_fields(target: Any) -> dict[str, Any]:
    """The array fields of a TrainState-like `target` except `opt_state`: what
    "reinitialize" restores (a partial restore: the old optimizer state is never read)."""
    return without_opt_state(target)


def rebuilt(target: Any, restored: Any, choice: OptimizerChange) -> Any:
    """`target` with the restored fields and an optimizer state chosen by `choice`.

    For "reinitialize", `restored` holds `kept_fields(target)`, already on the target's
    shardings; for "transfer" it is the whole saved state restored without a target, so
    its fields are placed here and the saved optimizer leaves that still fit are kept.
    """
    if choice == "reinitialize":
        fields = dict(restored)
    else:
        fields = {name: _placed_like(restored[name], value)
                  for name, value in kept_fields(target).items()}
    fresh = reinitialize_opt_state(target.tx, fields["params"])
    opt_state = (fresh if choice == "reinitialize"
                 else transfer_opt_state(restored["opt_state"], fresh))
    return target.replace(**fields, opt_state=opt_state)


def _placed_like(saved: Any, target: Any) -> Any:
    """`saved` (restored without a target) with `target`'s structure, dtypes and shardings."""

    def place(wanted: Any, value: Any) -> Any:
        if isinstance(wanted, jax.Array | jax.ShapeDtypeStruct):
            return jax.device_put(jnp.asarray(value, dtype=wanted.dtype), wanted.sharding)
        return type(wanted)(value)

    # tree_map reads `saved` up to the target's structure (a saved tuple is a list).
    return jax.tree_util.tree_map(place, target, saved)
