"""Freed allocator memory goes back to the OS after a save, where the C library allows it."""

import ctypes.util
import platform

import jax.numpy as jnp
import jaxpoint.core as ocp
from jaxpoint.core.checkpointers import memory_release


def test_release_uses_malloc_trim_on_glibc():
    # The suite runs on Linux with glibc, whose malloc_trim is what keeps RSS flat.
    assert platform.libc_ver()[0] == "glibc"
    assert ctypes.util.find_library("c") is not None
    assert memory_release.release_freed_memory() is True


def test_every_save_releases_freed_memory(tmp_path, monkeypatch):
    calls = []
    real = memory_release.release_freed_memory
    monkeypatch.setattr("jaxpoint.core.checkpointers.save_pipeline.release_freed_memory",
                        lambda: calls.append(real()))
    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    ckptr.save(tmp_path / "ok", args=ocp.args.StandardSave({"w": jnp.ones(8)}))
    assert calls == [True]  # the real release ran once, at the end of the save
