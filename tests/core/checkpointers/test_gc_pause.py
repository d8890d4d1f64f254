"""The collector pause around checkpoint calls: nested, thread-shared, always resumed."""

import gc
import threading

import jax.numpy as jnp
import jaxpoint.core as ocp
import pytest
from jaxpoint.core.checkpointers.gc_pause import gc_paused


def test_pause_nests_and_resumes_only_at_the_outermost_exit():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_pause_resumes_after_an_error():
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_pause_leaves_a_disabled_collector_disabled():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_pauses_in_two_threads_resume_once_both_end():
    inside, release = threading.Event(), threading.Event()

    def other():
        with gc_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with gc_paused():
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled()  # the other thread's pause is still open
    release.set()
    thread.join(10)
    assert gc.isenabled()


def test_save_and_restore_leave_the_collector_as_they_found_it(tmp_path):
    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    ckptr.save(tmp_path / "c", args=ocp.args.StandardSave({"w": jnp.arange(4)}))
    assert gc.isenabled()
    with pytest.raises(ocp.errors.CheckpointError):
        ckptr.restore(tmp_path / "missing")
    assert gc.isenabled()
    assert ckptr.restore(tmp_path / "c")["w"].tolist() == [0, 1, 2, 3]
    assert gc.isenabled()
