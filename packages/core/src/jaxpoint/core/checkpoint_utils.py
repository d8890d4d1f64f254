"""`ocp.checkpoint_utils`: restore args from a target tree, and evaluator iterators."""

from typing import Any

import jax
import numpy as np
from jaxpoint.core.handlers.target_restore_args import construct_restore_args
from jaxpoint.core.manager.evaluator import checkpoints_iterator, wait_for_new_checkpoint
from jaxpoint.core.tree.placeholder import PLACEHOLDER

PyTree = Any
STANDARD_ARRAY_TYPES = (int, float, np.ndarray, jax.Array)

__all__ = ["PLACEHOLDER", "PyTree", "STANDARD_ARRAY_TYPES", "checkpoints_iterator", "construct_restore_args",
           "wait_for_new_checkpoint"]
