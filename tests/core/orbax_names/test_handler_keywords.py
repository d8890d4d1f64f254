"""Orbax's handler keywords: honoured (format, in-flight bytes) or refused with a fix."""

from __future__ import annotations

import json

import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest


def _codecs(item, name: str) -> list[str]:
    """Codec names of a stored zarr3 array, read with TensorStore from the real files."""
    import tensorstore as ts

    spec = {"driver": "zarr3", "kvstore": {"driver": "ocdbt", "base": f"file://{item}"},
            "path": name}
    store = ts.open(spec).result()
    return json.dumps(store.spec().to_json()["metadata"]["codecs"])


@pytest.mark.parametrize("handler_cls", [ocp.PyTreeCheckpointHandler,
                                         ocp.StandardCheckpointHandler])
def test_use_compression_and_concurrency_are_honoured(tmp_path, handler_cls):
    state = {"w": jnp.arange(4096.0).reshape(64, 64), "b": np.arange(100_000, dtype=np.float32)}
    for use_compression in (True, False):
        path = tmp_path / f"c{use_compression}"
        handler = handler_cls(use_compression=use_compression, use_ocdbt=True,
                              save_concurrent_gb=0.001, restore_concurrent_gb=0.001)
        save = ocp.args.PyTreeSave(state) if handler_cls is ocp.PyTreeCheckpointHandler \
            else ocp.args.StandardSave(state)
        ocp.Checkpointer(handler).save(path, args=save)
        assert ("zstd" in _codecs(path, "b")) is use_compression
        restore = ocp.args.PyTreeRestore(state) if handler_cls is ocp.PyTreeCheckpointHandler \
            else ocp.args.StandardRestore(state)
        restored = ocp.Checkpointer(handler).restore(path, args=restore)
        np.testing.assert_array_equal(restored["b"], state["b"])


def test_use_zarr3_false_writes_zarr2(tmp_path):
    ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_zarr3=False)).save(
        tmp_path / "c", args=ocp.args.PyTreeSave({"b": np.arange(70_000.0)}))
    assert json.loads((tmp_path / "c" / "_METADATA").read_text())["use_zarr3"] is False


@pytest.mark.parametrize(("keyword", "value", "fix"), [
    ("aggregate_filename", "checkpoint", "msgpack aggregate"),
    ("memory_limit_options", object(), "save_concurrent_gb"),
    ("handler_impl", object(), "one pytree implementation"),
    ("is_prioritized_key_fn", lambda key: 0, "unordered"),
    ("enable_pinned_host_transfer", False, "pinned host memory"),
    ("type_handler_registry", ocp.type_handlers.create_type_handler_registry(),
     "register_type_handler"),
    ("multiprocessing_options", ocp.MultiprocessingOptions(primary_host=None),
     "CheckpointManagerOptions"),
])
def test_unsupported_values_are_refused_with_the_fix(keyword, value, fix):
    with pytest.raises(ValueError, match=f"{keyword}=.*not supported here.*{fix}"):
        ocp.PyTreeCheckpointHandler(**{keyword: value})


def test_defaults_of_orbax_keywords_are_accepted_and_bad_values_refused():
    ocp.PyTreeCheckpointHandler(
        None, multiprocessing_options=ocp.MultiprocessingOptions(), handler_impl=None,
        enable_pinned_host_transfer=True, type_handler_registry=None)
    ocp.StandardCheckpointHandler(save_concurrent_gb=96, restore_concurrent_gb=96, use_ocdbt=True)
    with pytest.raises(ValueError, match="save_concurrent_gb to be a positive number"):
        ocp.PyTreeCheckpointHandler(save_concurrent_gb=0)
    with pytest.raises(ValueError, match="disagree"):
        ocp.PyTreeCheckpointHandler(use_compression=False, compression="zstd")
    with pytest.raises(TypeError, match="unexpected keyword argument 'use_snappy'"):
        ocp.PyTreeCheckpointHandler(use_snappy=True)
    with pytest.raises(TypeError):
        ocp.StandardCheckpointHandler(use_snappy=True)
