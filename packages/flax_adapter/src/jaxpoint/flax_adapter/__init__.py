"""jaxpoint.flax_adapter: Flax linen and NNX training states, and `attach(trainer)`.

    ckpt = flax_adapter.attach(trainer, "/ckpt/run1")   # resumes when a step exists
    for step in range((ckpt.restored_step or 0) + 1, num_steps + 1):
        trainer.state, loss = train_step(trainer.state)
        ckpt.on_step_end(step, metrics={"loss": loss})
        if ckpt.should_stop:
            break
"""

from jaxpoint.flax_adapter.linen_state import abstract_train_state
from jaxpoint.flax_adapter.nnx_state import (
    abstract_nnx,
    has_variable_wrappers,
    nnx_tree,
    pure_target,
    restore_into_state,
)
from jaxpoint.flax_adapter.training_checkpointer import TrainingCheckpointer, attach

__all__ = [
    "TrainingCheckpointer",
    "abstract_nnx",
    "abstract_train_state",
    "attach",
    "has_variable_wrappers",
    "nnx_tree",
    "pure_target",
    "restore_into_state",
]
