"""docs/flax.md runs as written."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_flax_guide_examples_run(run_doc_page):
    blocks, namespace = run_doc_page("flax.md")
    assert len(blocks) == 3
    assert namespace["ckpt"].manager.all_steps() == [5, 10]
    assert isinstance(namespace["restored"], namespace["train_state"].TrainState)
    assert int(namespace["restored"].step) == 10
    assert namespace["restored"].params["kernel"].sharding.mesh == namespace["mesh"]
    assert isinstance(namespace["optimizer"], namespace["nnx"].Optimizer)


def test_readme_lists_both_packages_with_a_three_line_attach_example():
    text = (ROOT / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `packages/")]
    assert any("`jaxpoint.optax_adapter`" in row and "docs/optax.md" in row for row in rows)
    assert any("`jaxpoint.flax_adapter`" in row and "docs/flax.md" in row for row in rows)
    example = text.split("| `packages/flax_adapter`", 1)[1].split("```python\n", 1)[1]
    lines = example.split("```", 1)[0].strip().splitlines()
    assert len(lines) == 3 and "flax_adapter.attach(" in lines[0]
    assert "on_step_end(" in lines[1] and "should_stop" in lines[2]
