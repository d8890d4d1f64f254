"""The training examples: SIGTERM mid-run, resume in a new process, same losses."""

from flax_adapter.example_runs import interrupted_losses, uninterrupted_losses


def test_linen_example_resumed_losses_equal_an_uninterrupted_run(tmp_path):
    script = "examples/flax_linen_train.py"
    expected = uninterrupted_losses(script, tmp_path / "straight", steps=24)
    got, stopped_at = interrupted_losses(script, tmp_path / "interrupted", steps=24,
                                         sigterm_after_step=8)

    assert 8 <= stopped_at < 24  # it stopped mid-run, at the step it was on
    assert got == expected  # bit-exact: floats compared by equality


def test_nnx_example_resumed_losses_equal_an_uninterrupted_run(tmp_path):
    script = "examples/flax_nnx_train.py"
    expected = uninterrupted_losses(script, tmp_path / "straight", steps=24)
    got, stopped_at = interrupted_losses(script, tmp_path / "interrupted", steps=24,
                                         sigterm_after_step=8)

    assert 8 <= stopped_at < 24
    assert got == expected
