"""docs/flax.md runs as written."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_flax_guide_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "flax.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "flax.md", "exec"), namespace)  # noqa: S102
    assert namespace["ckpt"].manager.all_steps() == [5, 10]
    assert isinstance(namespace["restored"], namespace["train_state"].TrainState)
    assert int(namespace["restored"].step) == 10
    assert isinstance(namespace["optimizer"], namespace["nnx"].Optimizer)
