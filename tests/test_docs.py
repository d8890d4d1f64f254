"""Examples in docstrings and in the getting-started guide run as written."""

import doctest
import importlib
import pathlib
import pkgutil
import re
import shutil

import jaxpoint.core
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(jaxpoint.core.__path__, prefix="jaxpoint.core."):
        spec = importlib.util.find_spec(info.name)
        if spec and spec.origin and ">>>" in pathlib.Path(spec.origin).read_text():
            names.append(info.name)
    return names


@pytest.mark.parametrize("module_name", _modules_with_examples())
def test_docstring_examples(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_getting_started_examples_run(run_doc_page):
    blocks, _ = run_doc_page("getting-started.md")
    assert len(blocks) >= 2


def test_architecture_examples_run(run_doc_page):
    blocks, _ = run_doc_page("architecture.md", {"__name__": "architecture_example"})
    assert any("class NoteHandler" in block for block in blocks), "the handler example is gone"
    assert any("StorageOptions(" in block for block in blocks), "the tuning example is gone"


def test_the_orbax_style_example_runs_on_orbax_too(tmp_path, monkeypatch):
    """The guide says that block runs unchanged on orbax-checkpoint: run it there."""
    import jax
    import numpy as np
    import orbax.checkpoint

    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "getting-started.md").read_text()
    section = text.split("## The Orbax-style API", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    state = {"params": {"w": jax.numpy.ones((8, 8))}, "step": 10}
    namespace = {"jax": jax, "np": np, "ocp": orbax.checkpoint, "state": state}
    exec(compile(block, "getting-started.md (on Orbax)", "exec"), namespace)  # noqa: S102


def test_emergency_examples_run(run_doc_page):
    namespace: dict = {}
    try:
        blocks, _ = run_doc_page("emergency.md", namespace)
        assert len(blocks) == 2
    finally:
        if "local_in_ram" in namespace:  # the RAM disk is not the test's tmp_path
            shutil.rmtree(namespace["local_in_ram"], ignore_errors=True)
