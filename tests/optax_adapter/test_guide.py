"""docs/optax.md runs as written."""

import pathlib

import optax

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_optax_guide_examples_run(run_doc_page, capsys):
    blocks, namespace = run_doc_page("optax.md")
    assert len(blocks) == 3
    assert "the target has opt_state.0.trace.b" in capsys.readouterr().out
    assert isinstance(namespace["moved"][2].inner_state[0], optax.ScaleByAdamState)
    assert isinstance(namespace["fresh"][0], optax.TraceState)
