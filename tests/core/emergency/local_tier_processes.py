"""What the processes of the local-tier tests run (children import this module by name).

A launch either saves local steps (then, in some processes, is SIGKILLed in the middle of
the next save), or restores from folders the test prepared: every scenario of one launch
builds a LocalTier on its own folders, agrees on a step, restores it and compares every
shard it holds with the state built afresh for that step, bit for bit.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpoint.core import multihost
from jaxpoint.core.emergency import LocalTier
from jaxpoint.core.multihost.exchange import gather_from_all

STEPS = (1, 2, 3)
KILLED_STEP = 4
MIXED_STEP = 5
SPECS = {"weights": P(None, "model"), "bias": P("model"), "counts": P(), "mask": P("model"),
         "key": P()}


def mesh(devices_per_row: int, *, transpose: bool = False) -> jax.sharding.Mesh:
    """Replicas along axis 0; with `transpose`, the same devices in another order."""
    devices = np.array(jax.devices()).reshape(-1, devices_per_row)
    if transpose:
        devices = devices.T.reshape(-1, devices_per_row)
    return jax.sharding.Mesh(devices, ("replica", "model"))


def _global_values(step: int) -> dict[str, np.ndarray]:
    weights = (np.arange(8 * 16, dtype=np.float32).reshape(8, 16) + step * 1000)
    weights[0, :3] = [-0.0, np.nan, np.inf]
    weights.view(np.uint32)[1, 0] = 0x7FC00123  # a NaN with a payload: only bits show it
    return {
        "weights": weights,
        "bias": (np.linspace(-1, 1, 16) * step).astype(jnp.bfloat16),
        "counts": (np.arange(16, dtype=np.int8).reshape(4, 4) - step),
        "mask": np.arange(8) % (step + 1) == 0,
        "key": np.asarray(jax.random.key_data(jax.random.key(step, impl="rbg"))),
    }


def make_state(the_mesh: jax.sharding.Mesh, step: int) -> dict[str, jax.Array]:
    values = _global_values(step)
    state = {}
    for name, value in values.items():
        sharding = NamedSharding(the_mesh, SPECS[name])
        state[name] = jax.make_array_from_callback(value.shape, sharding,
                                                   lambda index, v=value: v[index])
    state["key"] = jax.random.wrap_key_data(state["key"], impl="rbg")
    return state


def abstract_state(the_mesh: jax.sharding.Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        make_state(the_mesh, 0))


def items_of(step: int) -> dict[str, Any]:
    return {"data": {"position": step * 10, "epoch": 0}, "config": {"lr": 0.5}}


def _shard_bytes(state: dict[str, jax.Array]) -> dict[str, list[tuple[str, bytes]]]:
    found = {}
    for name, leaf in state.items():
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        found[name] = sorted((str(s.device.id), np.asarray(s.data).tobytes())
                             for s in leaf.addressable_shards)
    return found


class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _capture() -> _Captured:
    handler = _Captured()
    emergency = logging.getLogger("jaxpoint.core.emergency")
    emergency.setLevel(logging.DEBUG)  # the broadcast batches are debug lines
    emergency.addHandler(handler)
    return handler


def _wait_until_dead(pid: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    stat = Path(f"/proc/{pid}/stat")
    while time.monotonic() < deadline:
        try:  # a killed child stays a zombie ("Z") until the harness reaps it
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.001)
    raise TimeoutError(f"process {pid} was still alive after {timeout_s} s")


def save_then_die(root: str, devices_per_row: int, dying: list[int],
                  ram_root: str | None, mixed_root: str | None = None) -> dict[str, Any]:
    """Saves STEPS into `<root>/p<i>` (and `<ram_root>/p<i>`), then the processes in `dying`
    are SIGKILLed just after `save(KILLED_STEP)` returned (its write still in flight), one
    after another from the highest index down.

    `<mixed_root>/p<i>` gets step 3, and a MIXED_STEP whose tree differs on process 1.
    """
    index = multihost.process_index()
    the_mesh = mesh(devices_per_row)
    report: dict[str, Any] = {"process": index}
    folders = [Path(root)] + ([Path(ram_root)] if ram_root else [])
    tiers = [LocalTier(folder / f"p{index}", global_mesh=the_mesh, max_to_keep=3)
             for folder in folders]
    for step in STEPS:
        state = make_state(the_mesh, step)
        for tier in tiers:
            tier.save(step, state, items=items_of(step))
    for tier in tiers:
        tier.wait_until_finished()
    if mixed_root is not None:
        with LocalTier(Path(mixed_root) / f"p{index}", global_mesh=the_mesh) as mixed:
            mixed.save(3, make_state(the_mesh, 3), items=items_of(3))
            other = make_state(the_mesh, MIXED_STEP)
            if index == 1:  # a process whose code changed the state: bias is float32 here
                other["bias"] = other["bias"].astype(jnp.float32)
            mixed.save(MIXED_STEP, other, items=items_of(MIXED_STEP))
    report["steps"] = tiers[0].local_steps()
    pids = gather_from_all(os.getpid(), name="pids")
    if index in dying:
        # The dying die one after another, highest index first: a process whose peer died
        # mid-call may be ended by JAX's coordination client (SIGABRT) before its own kill,
        # and process 0 hosts the coordination service.
        for later in sorted(p for p in dying if p > index):
            _wait_until_dead(int(pids[later]))
        tiers[0].save(KILLED_STEP, make_state(the_mesh, KILLED_STEP), items=items_of(KILLED_STEP))
        os.kill(os.getpid(), signal.SIGKILL)
    tiers[0].save(KILLED_STEP, make_state(the_mesh, KILLED_STEP), items=items_of(KILLED_STEP))
    tiers[0].wait_until_finished()
    report["steps_after"] = tiers[0].local_steps()
    return report


def restore_scenarios(root: str, devices_per_row: int,
                      scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs each scenario {name, folder, transpose?, rows?, limit?, step?, steps?, file_on?}
    and reports what it restored, or the error it raised. `step`: restore that step whatever
    the agreement says (`steps`: process i restores steps[i]); `file_on`: that process's
    folder becomes a file once built."""
    index = multihost.process_index()
    captured = _capture()
    results: dict[str, Any] = {}
    for scenario in scenarios:
        captured.lines.clear()
        rows = scenario.get("rows", devices_per_row)
        the_mesh = mesh(rows, transpose=scenario.get("transpose", False))
        folder = Path(scenario["folder"]) / f"p{index}"
        tier = LocalTier(folder, global_mesh=the_mesh,
                         broadcast_memory_limit_bytes=scenario.get("limit", 2**28))
        result: dict[str, Any] = {"local_steps": tier.local_steps()}
        if scenario.get("file_on") == index:
            shutil.rmtree(folder)
            folder.write_text("")
        try:
            result["step"] = tier.agree_on_restorable_step()
            step = scenario["steps"][index] if "steps" in scenario else scenario.get(
                "step", result["step"])
            _restore_into(result, tier, the_mesh, step)
        except Exception as error:  # the test checks it was raised on every process
            result["error"] = f"{type(error).__name__}: {error}"
        tier.close()
        result["log"] = list(captured.lines)
        results[scenario["name"]] = result
    del root
    return results


def _restore_into(result: dict[str, Any], tier: LocalTier, the_mesh: jax.sharding.Mesh,
                  step: int | None) -> None:
    if step is None:
        return
    state, items = tier.restore(step, abstract_state(the_mesh))
    expected = _shard_bytes(make_state(the_mesh, step))
    got = _shard_bytes(state)
    result["items"] = items
    result["mismatched"] = sorted(n for n in expected if expected[n] != got[n])
    result["shardings_equal"] = all(
        state[n].sharding == make_state(the_mesh, step)[n].sharding for n in state)
