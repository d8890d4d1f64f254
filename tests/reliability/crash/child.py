"""The process the crash harness kills: it saves (or restores) step after step until SIGKILL.

Run by path with a fresh interpreter: `python child.py '{"marker_fd": 5, "scratch": ...}'`.
It imports jax and jaxpoint, warms up in `scratch` (one save and one restore, so the
first real operation is not also the first compile), writes `ready` and waits for one
JSON line on stdin naming the scenario, the directory and the first step.

It reports what it is doing as lines on `marker_fd`, each `<CLOCK_MONOTONIC ns> <event>`:
  enter <phase> <main|bg> <thread id> / exit ...   entering / leaving a save phase
  begin <step>, staged <step>, committed <step>    the step's save started / returned
                                                   (async) / is committed
  restored <step> ok|bad                           a restore and its bit-exact check
The phases come from a profile hook (sys.setprofile / threading.setprofile) that watches
calls of a few jaxpoint functions; the library runs unchanged. Lines are written with one
os.write each (< PIPE_BUF), so lines from several threads never interleave, and a line
written before the SIGKILL is still read by the parent after it.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

Emit = Callable[[str], None]


def _emitter(fd: int) -> Emit:
    def emit(event: str) -> None:
        os.write(fd, f"{time.monotonic_ns()} {event}\n".encode())

    return emit


def _probe_table() -> dict[int, str]:
    """id(code object) -> phase, for the functions whose calls delimit the save phases."""
    from jaxpoint.core.checkpointers import checkpointer, save_pipeline, step_metadata
    from jaxpoint.core.handlers import composite
    from jaxpoint.core.storage import commit, ocdbt_merge

    functions = {
        save_pipeline.begin_save: "staging",
        save_pipeline.finish_save: "writing",
        ocdbt_merge.merge_process_databases: "merge",
        step_metadata.write_step_metadata: "finalize",
        composite.CompositeCheckpointHandler.finalize: "finalize",
        commit.RenameCommit.commit: "commit",
        checkpointer.Checkpointer.restore: "restore",
    }
    try:
        from jaxpoint.core.manager import deletion
    except ImportError:
        pass
    else:
        from jaxpoint.core.manager import manager

        functions[deletion.StepDeleter._delete_one] = "delete"
        functions[manager.CheckpointManager._prepare_as_primary] = "cleanup"
        functions[manager.CheckpointManager.restore] = "restore"
    return {id(function.__code__): phase for function, phase in functions.items()}


def install_probes(emit: Emit) -> None:
    """Reports entering and leaving each probed function, in every thread started later."""
    probes = _probe_table()
    main = threading.main_thread().ident

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event != "call" and event != "return":
            return
        phase = probes.get(id(frame.f_code))
        if phase is None:
            return
        ident = threading.get_ident()
        thread = "main" if ident == main else "bg"
        emit(f"{'enter' if event == 'call' else 'exit'} {phase} {thread} {ident}")

    threading.setprofile(profile)
    sys.setprofile(profile)


def _training_pause(rng: Any) -> None:
    """What a training loop does between saves: compute for a while (10-60 ms)."""
    import numpy as np

    deadline = time.monotonic() + rng.uniform(0.01, 0.06)
    block = np.ones((128, 128), np.float32)
    while time.monotonic() < deadline:
        block = np.tanh(block @ block.T * 1e-3)


def run_checkpointer(go: dict[str, Any], emit: Emit) -> None:
    """Checkpointer / AsyncCheckpointer saving `<dir>/<step>` (or `<dir>/current`, forced)."""
    import jaxpoint.core as ocp
    import numpy as np
    from reliability.crash.state import device_state

    is_async, force = go["async"], go["force"]
    pending: collections.deque[int] = collections.deque()

    def on_commit() -> None:  # background saves commit one at a time, in order
        emit(f"committed {pending.popleft()}")

    handler = ocp.StandardCheckpointHandler()
    ckptr = (ocp.AsyncCheckpointer(handler, async_options=ocp.AsyncOptions(
        post_finalization_callback=on_commit)) if is_async else ocp.Checkpointer(handler))
    rng = np.random.default_rng(go["start_step"])
    for step in range(go["start_step"], go["start_step"] + go["max_saves"]):
        state = device_state(step)
        name = "current" if force else str(step)
        emit(f"begin {step}")
        pending.append(step)
        ckptr.save(os.path.join(go["directory"], name), args=ocp.args.StandardSave(state),
                   force=force)
        if is_async:
            emit(f"staged {step}")
            _training_pause(rng)
        else:
            emit(f"committed {pending.popleft()}")
    ckptr.close()


def run_restores(go: dict[str, Any], emit: Emit) -> None:
    """Restores the latest step again and again, by turns through a Checkpointer and a fresh
    CheckpointManager, checking every bit."""
    import jaxpoint.core as ocp
    from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
    from reliability.crash.state import mismatches

    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    options = CheckpointManagerOptions(enable_async_checkpointing=False)
    for attempt in range(go["max_saves"]):
        if attempt % 2:
            with CheckpointManager(go["directory"], options=options) as manager:
                step = manager.latest_step()
                restored = manager.restore(step)
        else:
            step = max(int(name) for name in os.listdir(go["directory"]) if name.isdigit())
            restored = ckptr.restore(os.path.join(go["directory"], str(step), "default"))
        emit(f"restored {step} {'bad' if mismatches(restored, step) else 'ok'}")


def run_manager(go: dict[str, Any], emit: Emit) -> None:
    """CheckpointManager saves with max_to_keep, sync or async, deleting in the background."""
    import jaxpoint.core as ocp
    import numpy as np
    from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
    from reliability.crash.state import device_state

    pending: collections.deque[int] = collections.deque()

    def on_commit() -> None:  # background saves commit one at a time, in order
        emit(f"committed {pending.popleft()}")

    options = CheckpointManagerOptions(
        max_to_keep=go["max_to_keep"], enable_async_checkpointing=go["async"],
        enable_background_delete=go["background_delete"], cleanup_tmp_directories=True,
        async_options=ocp.AsyncOptions(post_finalization_callback=on_commit))
    manager = CheckpointManager(go["directory"], options=options)
    rng = np.random.default_rng(go["start_step"])
    for step in range(go["start_step"], go["start_step"] + go["max_saves"]):
        state = device_state(step)
        emit(f"begin {step}")
        pending.append(step)
        manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave({"step": step})))
        if go["async"]:
            emit(f"staged {step}")
            _training_pause(rng)
        else:
            emit(f"committed {pending.popleft()}")
    manager.close()


SCENARIOS: dict[str, Callable[[dict[str, Any], Emit], None]] = {
    "checkpointer": run_checkpointer,
    "restore": run_restores,
    "manager": run_manager,
}


def warm_up(scratch: str) -> None:
    import jaxpoint.core as ocp
    from reliability.crash.state import device_state

    ckptr = ocp.Checkpointer(ocp.StandardCheckpointHandler())
    path = os.path.join(scratch, "warm-up")
    ckptr.save(path, args=ocp.args.StandardSave(device_state(0)))
    ckptr.restore(path)


def main() -> None:
    config = json.loads(sys.argv[1])
    emit = _emitter(config["marker_fd"])
    import jax

    jax.devices()
    install_probes(emit)
    warm_up(config["scratch"])
    emit("ready")
    line = sys.stdin.readline()
    if not line.strip():
        return  # the parent closed stdin: a spare child that was never used
    go = json.loads(line)
    try:
        SCENARIOS[go["kind"]](go, emit)
    except BaseException as error:
        emit(f"error {type(error).__name__}: {error}".replace("\n", " ")[:2000])
        raise
    emit("finished")


if __name__ == "__main__":
    main()
