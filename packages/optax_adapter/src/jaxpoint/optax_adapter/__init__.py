"""jaxpoint.optax_adapter: Optax optimizer states restored with their real types.

Build the target from the optimizer (`abstract_opt_state(tx, params)`), restore it with
`ocp.args.StandardRestore`, and check or migrate a checkpoint whose optimizer changed.
"""

from jaxpoint.optax_adapter.abstract_state import abstract_opt_state
from jaxpoint.optax_adapter.leaf_path import dotted, leaf_path
from jaxpoint.optax_adapter.params_only import restore_args_without_opt_state, without_opt_state
from jaxpoint.optax_adapter.structure import (
    OptStateMismatchError,
    check_opt_state_structure,
    saved_leaf_paths,
)
from jaxpoint.optax_adapter.transfer import reinitialize_opt_state, transfer_opt_state

__all__ = [
    "OptStateMismatchError",
    "abstract_opt_state",
    "check_opt_state_structure",
    "dotted",
    "leaf_path",
    "reinitialize_opt_state",
    "restore_args_without_opt_state",
    "saved_leaf_paths",
    "transfer_opt_state",
    "without_opt_state",
]
