"""The training examples: SIGTERM mid-run, resume in a new process, same losses."""

import pytest
from flax_adapter.example_runs import interrupted_losses, start_uninterrupted, uninterrupted_losses

STEPS = 16
SIGTERM_AFTER = 6  # off the save interval (5): the preemption save is what resumes


@pytest.mark.parametrize("script", ["examples/flax_linen_train.py",
                                    "examples/flax_nnx_train.py"])
def test_resumed_losses_equal_an_uninterrupted_run(tmp_path, script):
    straight = start_uninterrupted(script, tmp_path / "straight", steps=STEPS)
    got, stopped_at = interrupted_losses(script, tmp_path / "interrupted", steps=STEPS,
                                         sigterm_after_step=SIGTERM_AFTER)
    expected = uninterrupted_losses(straight)

    assert SIGTERM_AFTER <= stopped_at < STEPS  # it stopped mid-run, at the step it was on
    assert sorted(expected) == list(range(1, STEPS + 1))
    assert got == expected  # bit-exact: floats compared by equality
