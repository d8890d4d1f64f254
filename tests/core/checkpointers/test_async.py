import dataclasses
import threading
from typing import Any, ClassVar

import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest
from jaxpoint.core.errors import BackgroundSaveError, CheckpointNotFoundError
from jaxpoint.core.handlers import CheckpointArgs, register_with_handler


def test_save_returns_before_the_write_and_commits_later(tmp_path):
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "a", {"x": np.ones(1 << 20, np.float32)})
    ckptr.wait_until_finished()
    assert not ckptr.is_saving_in_progress()
    assert ocp.restore(tmp_path / "a")["x"].sum() == 1 << 20


def test_mutation_and_deletion_after_save_do_not_change_what_is_written(tmp_path):
    host = np.arange(1000, dtype=np.float32)
    device = jnp.arange(1000, dtype=np.float32) * 2
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "a", {"host": host, "device": device})
    host[:] = -1
    device.delete()
    ckptr.wait_until_finished()
    restored = ocp.restore(tmp_path / "a")
    assert np.array_equal(restored["host"], np.arange(1000, dtype=np.float32))
    assert np.array_equal(restored["device"], np.arange(1000, dtype=np.float32) * 2)


@pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")
def test_donation_after_save_does_not_change_what_is_written(tmp_path):
    import jax

    params = jnp.arange(1 << 16, dtype=jnp.float32)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "a", {"params": params})
    step = jax.jit(lambda p: p * 0 - 1, donate_argnums=0)
    updated = step(params)
    ckptr.wait_until_finished()
    assert float(updated[0]) == -1.0
    restored = ocp.restore(tmp_path / "a")["params"]
    assert np.array_equal(restored, np.arange(1 << 16, dtype=np.float32))


class ExplodingHandler:
    """A user handler whose write fails, as a full disk or a lost bucket would."""

    typestr: ClassVar[str] = "tests.ExplodingHandler"

    def __init__(self) -> None:
        self.release = threading.Event()

    def stage(self, directory, args, *, context):
        def write():
            self.release.wait(10)
            raise OSError(28, "No space left on device")

        return write

    def finalize(self, directory, *, context):
        pass

    def restore(self, directory, args=None):
        return None

    def metadata(self, directory):
        return None


@register_with_handler(ExplodingHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class ExplodingSave(CheckpointArgs):
    item: Any = None


@pytest.mark.parametrize("next_call", ["wait_until_finished", "save", "close", "check_for_errors"])
def test_background_error_is_raised_by_the_next_call(tmp_path, next_call):
    handler = ExplodingHandler()
    ckptr = ocp.AsyncCheckpointer(handler)
    ckptr.save(tmp_path / "a", args=ExplodingSave())
    assert ckptr.is_saving_in_progress()
    handler.release.set()
    if next_call == "check_for_errors":
        while ckptr.is_saving_in_progress():
            pass
    with pytest.raises(BackgroundSaveError, match="No space left on device"):
        if next_call == "save":
            ckptr.save(tmp_path / "b", args=ExplodingSave())
        else:
            getattr(ckptr, next_call)()
    with pytest.raises(CheckpointNotFoundError):
        ocp.restore(tmp_path / "a")  # nothing partial is visible
    ckptr.wait_until_finished()  # the error is raised once, not forever
