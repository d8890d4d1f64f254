"""The public surface of jaxpoint.optax_adapter is pinned: a change here is deliberate."""

import jaxpoint.optax_adapter as optax_adapter


def test_public_names():
    assert optax_adapter.__all__ == [
        "OptStateMismatchError", "abstract_opt_state", "check_opt_state_structure", "dotted",
        "leaf_path", "reinitialize_opt_state", "restore_args_without_opt_state",
        "saved_leaf_paths", "transfer_opt_state", "without_opt_state"]
    for name in optax_adapter.__all__:
        assert getattr(optax_adapter, name).__module__.startswith("jaxpoint.optax_adapter.")
