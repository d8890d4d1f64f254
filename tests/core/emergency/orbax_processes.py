"""What the processes of the orbax-interop test run (children import this module by name).

orbax-checkpoint 0.12.8's emergency manager needs, on CPU under `jax.distributed`: its
private `multihost.initialize_runtime_to_distributed_ids()` and
`initialize_distributed_to_device_ids()` (a local save raises "Please call
initialize_distributed_to_device_ids()" without them), parsed absl flags (a local restore
reads `--experimental_use_distributed_id_for_mesh_consistency`), and at least 2 replicas
on the replica axis. Its persistent tier is written by replica 0 only, its local tier by
the other replicas only. `orbax_setup` does exactly that set-up, and nothing more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

SPECS = {"w": P(None, "model"), "b": P("model")}


def orbax_setup() -> None:
    from absl import flags
    from orbax.checkpoint._src.multihost import multihost as orbax_multihost

    orbax_multihost.initialize_runtime_to_distributed_ids()
    orbax_multihost.initialize_distributed_to_device_ids()
    flags.FLAGS.mark_as_parsed()


def mesh() -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.array(jax.devices()).reshape(2, -1), ("replica", "model"))


def values(step: int) -> dict[str, np.ndarray]:
    return {"w": np.arange(64, dtype=np.float32).reshape(8, 8) * (step + 1),
            "b": np.arange(8, dtype=np.int32) - step}


def state(the_mesh: jax.sharding.Mesh, step: int) -> dict[str, jax.Array]:
    return {name: jax.make_array_from_callback(value.shape, NamedSharding(the_mesh, SPECS[name]),
                                               lambda index, v=value: v[index])
            for name, value in values(step).items()}


def abstract(the_mesh: jax.sharding.Mesh) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        state(the_mesh, 0))


def problems(restored: dict[str, jax.Array], step: int, the_mesh: jax.sharding.Mesh) -> list[str]:
    """What differs between `restored` and the state of `step`, shard by shard."""
    found = []
    for name, expected in values(step).items():
        leaf = restored[name]
        if leaf.sharding != NamedSharding(the_mesh, SPECS[name]):
            found.append(f"{name}: sharding {leaf.sharding}")
        for shard in leaf.addressable_shards:
            if not np.array_equal(np.asarray(shard.data), expected[shard.index]):
                found.append(f"{name}: shard {shard.index} differs")
    return found


def _local(root: Path, name: str) -> Path:
    from jaxpoint.core import multihost

    folder = root / f"{name}-local-{multihost.process_index()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def both_directions(root: str) -> dict[str, Any]:
    """jaxpoint writes persistent steps that orbax restores, and the other way round."""
    import jaxpoint.core as jp
    import orbax.checkpoint as ocp
    from jaxpoint.core import emergency
    from orbax.checkpoint.experimental.emergency import checkpoint_manager as orbax_emergency

    orbax_setup()
    base, the_mesh = Path(root), mesh()
    (base / "by-jaxpoint").mkdir(exist_ok=True)
    (base / "by-orbax").mkdir(exist_ok=True)
    jp_options = emergency.CheckpointManagerOptions(
        local=emergency.LocalCheckpointOptions(save_interval_steps=1),
        persistent=emergency.PersistentCheckpointOptions(save_interval_steps=2))
    with emergency.CheckpointManager(_local(base, "jp"), base / "by-jaxpoint", the_mesh,
                                     abstract(the_mesh), options=jp_options) as manager:
        for step in range(4):  # persistent: 0 and 2
            manager.save(step, args=jp.args.Composite(state=jp.args.PyTreeSave(
                state(the_mesh, step)), data=jp.args.JsonSave({"position": step})))
    orbax_options = orbax_emergency.CheckpointManagerOptions(
        local=orbax_emergency.LocalCheckpointOptions(save_interval_steps=1),
        persistent=orbax_emergency.PersistentCheckpointOptions(save_interval_steps=2))
    orbax_manager = orbax_emergency.CheckpointManager(
        _local(base, "ob"), base / "by-orbax", the_mesh, abstract(the_mesh),
        options=orbax_options)
    for step in range(4):
        orbax_manager.save(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeSave(state(the_mesh, step))))
    orbax_manager.close()

    # Fresh managers with empty local folders: only the persistent tier is left.
    reader = orbax_emergency.CheckpointManager(
        _local(base, "ob-reads"), base / "by-jaxpoint", the_mesh, abstract(the_mesh),
        options=orbax_options)
    orbax_step = reader.latest_step()
    orbax_read = problems(reader.restore(orbax_step).state, 2, the_mesh)
    reader.close()
    with emergency.CheckpointManager(_local(base, "jp-reads"), base / "by-orbax", the_mesh,
                                     abstract(the_mesh), options=jp_options) as manager:
        restored = manager.restore()
        jaxpoint_step = manager.persistent_steps()
        jaxpoint_read = problems(restored.state, 2, the_mesh)
        items = sorted(name for name in restored if name != "state")
    return {"orbax_step": orbax_step, "orbax_read": orbax_read, "jaxpoint_steps": jaxpoint_step,
            "jaxpoint_read": jaxpoint_read, "jaxpoint_items": items}
