"""How a trainer's `state` becomes a checkpoint tree and how a restored tree goes back.

A linen `TrainState` (or any pytree) is saved as it is and replaced on restore; its
`apply_fn` and `tx` are static fields, so they come from the live state, never from the
checkpoint. An NNX object (a model, an `nnx.Optimizer`, or a tuple of them) is saved as its
pure dict and updated in place.
"""

from __future__ import annotations

from typing import Any

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.flax_adapter import nnx_state


class StateBinding:
    """The `state` attribute of a trainer, read for saving and written after a restore."""

    def __init__(self, trainer: Any) -> None:
        if not hasattr(trainer, "state"):
            raise InvalidArgumentError(
                f"Expected a trainer with a `state` attribute (a TrainState, an NNX model "
                f"with its optimizer, or any pytree), got {type(trainer).__name__} without "
                "one. To fix, pass an object such as types.SimpleNamespace(state=state).")
        self._trainer = trainer
        self._is_wrapped = False

    @property
    def is_nnx(self) -> bool:
        return nnx_state.is_nnx_object(self._trainer.state)

    @property
    def is_wrapped(self) -> bool:
        """Whether the last `target` was an `nnx.State` with `{'value': ...}` wrappers."""
        return self._is_wrapped

    def tree(self) -> Any:
        """The tree to save now."""
        state = self._trainer.state
        return nnx_state.nnx_tree(state) if self.is_nnx else state

    def target(self, saved: Any = None) -> Any:
        """The restore target: the live state's own structure, dtypes and shardings.

        `saved` (the item's metadata) picks the NNX form: an `nnx.State` with
        `{'value': ...}` wrappers, as Orbax writes `nnx.state(model)`, restores onto the
        live `nnx.State`; otherwise onto the pure dict.
        """
        self._is_wrapped = (self.is_nnx and saved is not None
                            and nnx_state.has_variable_wrappers(saved))
        if self._is_wrapped:
            return nnx_state.live_state(self._trainer.state)
        return self.tree()

    def apply(self, restored: Any) -> None:
        """Puts a restored tree (of the form `target` chose) back into the trainer."""
        if self._is_wrapped:
            nnx_state.update_from_state(self._trainer.state, restored)
        elif self.is_nnx:
            nnx_state.update_object(self._trainer.state, restored)
        else:
            self._trainer.state = restored
