"""`ocp.test_utils`: the helpers users' checkpoint tests call, as Orbax names them."""

from jaxpoint.core.handlers.type_registry import (
    global_type_handler_registry_context,
    register_type_handler,
)
from jaxpoint.core.multihost import sync_global_processes
from jaxpoint.core.testing.fixtures import (
    assert_tree_equal,
    create_sharded_array,
    empty_directory,
    erase_and_create_empty,
    is_leaf,
    save_fake_tmp_dir,
    setup_pytree,
    setup_sharded_pytree,
)

__all__ = [
    "assert_tree_equal", "create_sharded_array", "empty_directory", "erase_and_create_empty",
    "global_type_handler_registry_context", "is_leaf", "register_type_handler",
    "save_fake_tmp_dir", "setup_pytree", "setup_sharded_pytree", "sync_global_processes",
]
