"""The first way out of a changed optimizer: read everything but the optimizer state."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxpoint.core import args as ocp_args
from jaxpoint.core.errors import InvalidArgumentError


def without_opt_state(target: Any, *, field: str = "opt_state") -> dict[str, Any]:
    """The entries of `target` other than its optimizer state, as a dict.

    `target` is a mapping or a dataclass (a Flax `TrainState`, whose static fields such as
    `apply_fn` and `tx` are left out: they are never in a checkpoint).
    """
    if isinstance(target, Mapping):
        entries = dict(target)
    elif dataclasses.is_dataclass(target) and not isinstance(target, type):
        entries = {item.name: getattr(target, item.name) for item in dataclasses.fields(target)
                   if item.metadata.get("pytree_node", True)}
    else:
        entries = {}
    if field not in entries:
        raise InvalidArgumentError(
            f"Expected a target with an optimizer state at {field!r} (a dict or a TrainState), "
            f"got {type(target).__name__} with {sorted(entries)}. To fix, pass field= with the "
            "name the optimizer state is saved under.")
    del entries[field]
    return entries


def restore_args_without_opt_state(target: Any, *,
                                   field: str = "opt_state") -> ocp_args.PyTreeRestore:
    """Restore args that read every entry of `target` except its optimizer state.

    The saved optimizer state is never read, so it may have any structure: restore the
    params with these, then start the optimizer afresh with
    `reinitialize_opt_state(tx, restored["params"])`. The result is a dict (see
    `without_opt_state`).
    """
    return ocp_args.PyTreeRestore(item=without_opt_state(target, field=field),
                                  partial_restore=True)
