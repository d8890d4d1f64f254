"""`ocp.utils`: Orbax's grab-bag of helpers, as a facade over the modules that own them.

Nothing is defined here; each name is re-exported from its layer (`tree`, `manager`,
`multihost`, `checkpointers`). New code should import from those namespaces instead.
"""

from jaxpoint.core.checkpointers.save_duration import record_saved_duration
from jaxpoint.core.inspection.step_paths import (
    TMP_DIR_SUFFIX,
    any_checkpoint_step,
    checkpoint_steps,
    checkpoint_steps_paths,
    get_save_directory,
    step_from_checkpoint_name,
)
from jaxpoint.core.inspection.step_paths import all_temporary_paths as tmp_checkpoints
from jaxpoint.core.inspection.step_paths import is_path_finalized as is_checkpoint_finalized
from jaxpoint.core.inspection.step_paths import is_path_temporary as is_tmp_checkpoint
from jaxpoint.core.multihost import (
    broadcast_one_to_all,
    fully_replicated_host_local_array_to_global_array,
    is_primary_host,
    reached_preemption,
    sync_global_processes,
)
from jaxpoint.core.tree import PyTree
from jaxpoint.core.tree.abstract import to_shape_dtype_struct
from jaxpoint.core.tree.flat_dict import from_flat_dict, to_flat_dict
from jaxpoint.core.tree.flatten import is_empty_node
from jaxpoint.core.tree.keys import is_dict_key, is_sequence_key
from jaxpoint.core.tree.keys import key_name as get_key_name
from jaxpoint.core.tree.keys import str_keypath as tuple_path_from_keypath
from jaxpoint.core.tree.serialized import deserialize_tree, serialize_tree

# Orbax's name for the same barrier (a process barrier here, as in Orbax's utils).
sync_global_devices = sync_global_processes

__all__ = [
    "PyTree", "TMP_DIR_SUFFIX", "any_checkpoint_step", "broadcast_one_to_all", "checkpoint_steps",
    "checkpoint_steps_paths", "deserialize_tree", "from_flat_dict",
    "fully_replicated_host_local_array_to_global_array", "get_key_name", "get_save_directory",
    "is_checkpoint_finalized", "is_dict_key", "is_empty_node", "is_sequence_key", "is_primary_host", "is_tmp_checkpoint",
    "reached_preemption", "record_saved_duration", "serialize_tree", "step_from_checkpoint_name",
    "sync_global_devices", "sync_global_processes", "tmp_checkpoints", "to_flat_dict",
    "to_shape_dtype_struct", "tuple_path_from_keypath",
]
