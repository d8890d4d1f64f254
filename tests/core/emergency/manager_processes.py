"""What the processes of the emergency-manager tests run (children import this module by name).

A tiny deterministic training loop (linear regression, one sharded weight matrix, SGD) with
the emergency manager: `train` saves local every step and persistent every 5 steps, and one
process receives SIGTERM mid-way; `resume` restores in fresh processes from folders the test
prepared and trains to the end, next to an uninterrupted run of the same loop.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpoint.core import emergency, multihost

LAST_STEP = 30
PERSISTENT_INTERVAL = 5
# JAX's preemption service agrees on a step about a second after SIGTERM: steps this long
# let the loop reach it well before LAST_STEP.
STEP_AFTER_SIGTERM_S = 0.1
RESUMED_STEPS = 4  # trained after a resume, compared with the uninterrupted run
SIGTERM_AT = 4
SIGTERM_PROCESS = 1


def mesh(devices_per_row: int) -> jax.sharding.Mesh:
    """Replicas along axis 0 (processes own whole rows: 2 x 2 or 4 x 2 devices)."""
    return jax.sharding.Mesh(np.array(jax.devices()).reshape(2, devices_per_row),
                             ("replica", "model"))


def initial_state(the_mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    w = np.linspace(-1, 1, 8 * 8, dtype=np.float32).reshape(8, 8)
    key = np.asarray(jax.random.key_data(jax.random.key(0)))
    return {"w": _global(w, NamedSharding(the_mesh, P(None, "model"))),
            "key": jax.random.wrap_key_data(_global(key, NamedSharding(the_mesh, P())))}


def _global(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def abstract_state(the_mesh: jax.sharding.Mesh) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        initial_state(the_mesh))


@jax.jit
def _train_step(state: dict[str, jax.Array]) -> tuple[dict[str, jax.Array], jax.Array]:
    key, batch_key = jax.random.split(state["key"])
    x = jax.random.normal(batch_key, (16, 8))
    y = jnp.sin(x)

    def loss_fn(w: jax.Array) -> jax.Array:
        return jnp.mean((x @ w - y) ** 2)

    loss, grad = jax.value_and_grad(loss_fn)(state["w"])
    return {"w": state["w"] - 0.1 * grad, "key": key}, loss


def _options() -> emergency.CheckpointManagerOptions:
    return emergency.CheckpointManagerOptions(
        local=emergency.LocalCheckpointOptions(save_interval_steps=1, max_to_keep=3),
        persistent=emergency.PersistentCheckpointOptions(save_interval_steps=PERSISTENT_INTERVAL))


def _manager(root: Path, the_mesh: jax.sharding.Mesh) -> emergency.CheckpointManager:
    return emergency.CheckpointManager(
        root / f"local-{multihost.process_index()}", root / "persistent", the_mesh,
        abstract_state(the_mesh), options=_options())


def _loop(manager: emergency.CheckpointManager | None, state: Any, first: int,
          losses: dict[int, float], *, last: int = LAST_STEP, sigterm_at: int | None = None) -> int:
    """Steps `first`..`last`; returns the step the loop stopped at."""
    for step in range(first, last + 1):
        state, loss = _train_step(state)
        losses[step] = float(loss)
        if step == sigterm_at and multihost.process_index() == SIGTERM_PROCESS:
            os.kill(os.getpid(), signal.SIGTERM)
        if sigterm_at is not None and step >= sigterm_at:
            time.sleep(STEP_AFTER_SIGTERM_S)
        if manager is None:
            continue
        args = ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                  data=ocp.args.JsonSave({"position": step}))
        manager.save(step, args=args)
        if manager.reached_preemption(step):
            return step
    return last


def train(root: str, devices_per_row: int) -> dict[str, Any]:
    """Trains with checkpoints until the preemption that SIGTERM on one process starts."""
    the_mesh = mesh(devices_per_row)
    losses: dict[int, float] = {}
    with _manager(Path(root), the_mesh) as manager:
        stopped = _loop(manager, initial_state(the_mesh), 1, losses, sigterm_at=SIGTERM_AT)
        local = manager.local_steps()  # read at once: the preemption save has committed
    return {"stopped": stopped, "local": local, "losses": losses}


def resume(roots: dict[str, str], devices_per_row: int) -> dict[str, Any]:
    """For each scenario folder: restore (step, item, losses after it); and a reference run."""
    the_mesh = mesh(devices_per_row)
    reference: dict[int, float] = {}
    _loop(None, initial_state(the_mesh), 1, reference)
    results: dict[str, Any] = {"reference": reference}
    for name, root in roots.items():
        with _manager(Path(root), the_mesh) as manager:
            restored = manager.restore()
            step = restored.data["position"]
            losses: dict[int, float] = {}
            _loop(manager, restored.state, step + 1, losses, last=step + RESUMED_STEPS)
            results[name] = {"step": step, "losses": losses,
                             "persistent": manager.persistent_steps()}
    return results


def preempt_twice(root: str) -> None:
    """One process, 8 devices: SIGTERM at step 3, a second one while its save is in flight."""
    the_mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), ("replica", "model"))
    with emergency.CheckpointManager(Path(root) / "local", Path(root) / "persistent", the_mesh,
                                     abstract_state(the_mesh), options=_options()) as manager:
        state = initial_state(the_mesh)
        for step in range(1, LAST_STEP + 1):
            state, _ = _train_step(state)
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)
                # Lands while save(3) stages or writes: the main thread handles it there.
                threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGTERM)).start()
            manager.save(step, args=ocp.args.Composite(
                state=ocp.args.PyTreeSave(state), data=ocp.args.JsonSave({"position": step})))
            if manager.reached_preemption(step):
                break


def restore_one_process(root: str) -> dict[str, Any]:
    the_mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), ("replica", "model"))
    with emergency.CheckpointManager(Path(root) / "local", Path(root) / "persistent", the_mesh,
                                     abstract_state(the_mesh), options=_options()) as manager:
        restored = manager.restore()
        expected = initial_state(the_mesh)
        for _ in range(restored.data["position"]):
            expected, _ = _train_step(expected)
        return {"step": restored.data["position"], "local": manager.local_steps(),
                "exact": bool(np.array_equal(np.asarray(restored.state["w"]),
                                             np.asarray(expected["w"])))}
