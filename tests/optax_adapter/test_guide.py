"""docs/optax.md runs as written."""

import pathlib
import re

import optax

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_optax_guide_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "optax.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "optax.md", "exec"), namespace)  # noqa: S102
    assert "the target has opt_state.0.trace.b" in capsys.readouterr().out
    assert isinstance(namespace["moved"][2].inner_state[0], optax.ScaleByAdamState)
    assert isinstance(namespace["fresh"][0], optax.TraceState)
