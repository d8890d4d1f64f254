"""A training script that ends in one of several ways while a save is in flight.

Run as `python exit_child.py SCENARIO DIRECTORY`; tests/core/manager/test_exit_and_signals.py
checks its exit status, its log and what it left in DIRECTORY. Saves go through a real
handler whose write takes `WRITE_S` seconds, so that the save is still in flight when the
script ends; "ready" on stdout tells the test when to send a signal.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any, ClassVar

from jaxpoint.core import args
from jaxpoint.core.handlers import CheckpointArgs, SaveContext, WriteStep, register_with_handler
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.storage import Location, read_json

WRITE_S = float(os.environ.get("EXIT_CHILD_WRITE_S", "1.5"))


class SlowHandler:
    """Writes its value as JSON after WRITE_S seconds, as a slow disk would."""

    typestr: ClassVar[str] = "tests.core.manager.exit_child.SlowHandler"

    def stage(self, directory: Location, save: Any, *, context: SaveContext) -> WriteStep:
        def write() -> None:
            directory.make_folder()
            time.sleep(WRITE_S)
            (directory / "value").write_json(save.value)

        return write

    def finalize(self, directory: Location, *, context: SaveContext) -> None:
        return None

    def restore(self, directory: Location, restore: Any | None = None) -> Any:
        return read_json(directory / "value", expect=object)

    def metadata(self, directory: Location) -> Any:
        return None


@register_with_handler(SlowHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class SlowSave(CheckpointArgs):
    value: Any = None


def ready() -> None:
    print("ready", flush=True)


def steps_with_sigterm_before_3() -> Iterator[int]:
    """Steps 0 to 99; SIGTERM reaches this process before step 3, as from a scheduler."""
    for step in range(100):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        yield step


def manager(directory: str, **options: Any) -> CheckpointManager:
    return CheckpointManager(directory, CheckpointManagerOptions(**options),
                             item_handlers=SlowHandler())


def end_of_script(directory: str) -> None:
    manager(directory).save(1, args=SlowSave({"step": 1}))


def sys_exit(directory: str) -> None:
    checkpoints = manager(directory)
    for step in range(10):
        checkpoints.save(step, args=SlowSave({"step": step}))
        if step == 1:
            sys.exit(3)


def exception(directory: str) -> None:
    checkpoints = manager(directory)
    for step in range(10):
        checkpoints.save(step, args=SlowSave({"step": step}))
        if step == 1:
            raise RuntimeError("the loss went NaN")


def ctrl_c(directory: str) -> None:
    checkpoints = manager(directory, enable_async_checkpointing=True)
    checkpoints.save(0, args=SlowSave({"step": 0}))
    checkpoints.wait_until_finished()
    checkpoints.save(1, args=SlowSave({"step": 1}))
    ready()
    time.sleep(60)  # the test's Ctrl-C lands here


def ctrl_c_in_with(directory: str) -> None:
    with manager(directory, enable_async_checkpointing=True) as checkpoints:
        checkpoints.save(0, args=SlowSave({"step": 0}))
        checkpoints.wait_until_finished()
        checkpoints.save(1, args=SlowSave({"step": 1}))
        ready()
        time.sleep(60)  # the test's first Ctrl-C lands here; the second in close()


def preemption_break(directory: str) -> None:
    checkpoints = manager(directory, save_interval_steps=1000)
    for step in steps_with_sigterm_before_3():
        checkpoints.save(step, args=SlowSave({"step": step}))
        if checkpoints.reached_preemption(step):
            break


def sigterm_ignored(directory: str) -> None:
    checkpoints = manager(directory, save_interval_steps=1000)
    for step in steps_with_sigterm_before_3():
        checkpoints.save(step, args=SlowSave({"step": step}))
        print(f"step {step} done", flush=True)


def sigterm_ignored_by_policy(directory: str) -> None:
    """A custom policy without preemption saves, in a loop that never asks."""
    from jaxpoint.core.manager import FixedIntervalPolicy

    checkpoints = manager(directory, save_interval_steps=None,
                          save_decision_policy=FixedIntervalPolicy(1000))
    for step in steps_with_sigterm_before_3():
        checkpoints.save(step, args=SlowSave({"step": step}))
        print(f"step {step} done", flush=True)


def sigterm_not_handled(directory: str) -> None:
    checkpoints = manager(directory, save_interval_steps=1000, handle_sigterm=False)
    for step in steps_with_sigterm_before_3():
        checkpoints.save(step, args=SlowSave({"step": step}))


def sigterm_after_close(directory: str) -> None:
    with manager(directory, save_interval_steps=1000) as checkpoints:
        checkpoints.save(0, args=SlowSave({"step": 0}))
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    print("survived", flush=True)


def second_sigterm(directory: str) -> None:
    checkpoints = manager(directory, save_interval_steps=1000)
    checkpoints.save(0, args=SlowSave({"step": 0}))
    os.kill(os.getpid(), signal.SIGTERM)
    checkpoints.save(1, args=SlowSave({"step": 1}))  # the preemption save, in flight
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    print("survived", flush=True)


def standard_state(directory: str) -> None:
    """A real array state, so that the exit path is exercised with TensorStore writes."""
    import numpy as np

    state = {"w": np.arange(4 * 1024 * 1024, dtype=np.float32)}
    checkpoints = CheckpointManager(directory, CheckpointManagerOptions())
    for step in range(3):
        checkpoints.save(step, args=args.StandardSave({"w": state["w"] + step}))


SCENARIOS = {f.__name__: f for f in (end_of_script, sys_exit, exception, ctrl_c, ctrl_c_in_with,
                                     preemption_break, sigterm_ignored, sigterm_ignored_by_policy,
                                     sigterm_not_handled,
                                     sigterm_after_close, second_sigterm, standard_state)}

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    SCENARIOS[sys.argv[1]](sys.argv[2])
