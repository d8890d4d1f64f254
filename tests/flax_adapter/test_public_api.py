"""The public surface of jaxpoint.flax_adapter is pinned: a change here is deliberate."""

import jaxpoint.flax_adapter as flax_adapter


def test_public_names():
    assert flax_adapter.__all__ == [
        "TrainingCheckpointer", "abstract_nnx", "abstract_train_state", "attach",
        "has_variable_wrappers", "nnx_tree", "pure_target", "restore_into_state"]
    for name in flax_adapter.__all__:
        assert getattr(flax_adapter, name).__module__.startswith("jaxpoint.flax_adapter.")
