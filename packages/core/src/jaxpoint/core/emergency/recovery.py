"""Recovery from the local tier: agree on a step every slot still has, then rebuild it.

After a restart some processes may have lost their local folder (a replaced host) or hold
only older steps. Every process reports, through the coordination service, which of its
local steps it can serve (its record's mesh layout and device positions equal the current
ones). A step is restorable when every slot of the mesh (a position off the replica axis)
has a replica whose process holds it; all processes compute the newest such step from the
same reports, so they agree without a further round.

`restore` then, when every process holds the step, has each one read its own shards.
Otherwise it picks one source replica per slot (the lowest replica whose process holds
the step); only the processes owning a source device read (the readers), and
`multihost.replica_sum` copies each slot's shards to every other replica: one exact,
memory-bounded sum over the replica axis. Items (JSON) come from the lowest reader.

Call sequence of `restore`, every process of the mesh, in the same order:
  1. exchange: who holds the step (and with which leaves);
  2. readers read their shards and items; every process reports its outcome to
     `agree_on_success`, so a failed read raises everywhere before any device collective;
  3. the lowest reader broadcasts the items (and random-key implementations);
  4. batches of leaves are summed over the replica axis.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import jax
from jaxpoint.core import multihost
from jaxpoint.core.emergency.local_folder import LocalFolder, StepRecord
from jaxpoint.core.emergency.replicas import ReplicaGeometry
from jaxpoint.core.errors import InvalidArgumentError, StepNotFoundError
from jaxpoint.core.multihost.exchange import gather_from_all
from jaxpoint.core.multihost.replica_sum import sum_over_replicas

logger = logging.getLogger(__name__)

# Per device and batch: as the single-replica restore (see handlers/single_replica.py).
DEFAULT_BROADCAST_MEMORY_LIMIT_BYTES = 256 * 2**20
DEFAULT_TIMEOUT_S = 600.0


def _usable(record: StepRecord, geometry: ReplicaGeometry) -> str | None:
    """Why this process cannot serve `record`'s step on the current mesh; None if it can."""
    difference = record.layout.difference(geometry.layout)
    if difference is not None:
        return difference
    positions = geometry.positions()
    own = tuple(sorted(positions[d.id] for d in geometry.mesh.devices.flat
                       if d.process_index == multihost.process_index()))
    if record.positions != own:
        return (f"written by process {record.process_index} for (replica, slot) positions "
                f"{list(record.positions)}, but this process {multihost.process_index()} now "
                f"holds {list(own)}")
    return None


def _leaves_digest(record: StepRecord) -> str:
    return hashlib.sha256(json.dumps(record.to_json()["leaves"]).encode()).hexdigest()[:16]


def _report(folder: LocalFolder, geometry: ReplicaGeometry) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for step, record in folder.records().items():
        why = _usable(record, geometry)
        steps[str(step)] = {"why_not": why, "leaves": _leaves_digest(record)}
    return {"steps": steps}


def agree_on_restorable_step(folder: LocalFolder, geometry: ReplicaGeometry, *,
                             timeout_s: float) -> int | None:
    """Collective: every process of the mesh calls this, in the same order.

    The newest step whose every slot some holding process covers, the same on every
    process; None when there is none, with one log line saying why.
    """
    reports = gather_from_all(_report(folder, geometry), name="local-tier/steps",
                              processes=geometry.members, timeout_s=timeout_s)
    steps = sorted({int(s) for r in reports.values() for s in r["steps"]}, reverse=True)
    reasons: list[str] = []
    for step in steps:
        entries = {p: r["steps"][str(step)] for p, r in reports.items() if str(step) in r["steps"]}
        refused = {p: e["why_not"] for p, e in entries.items() if e["why_not"] is not None}
        holders = [p for p in entries if p not in refused]
        digests = {entries[p]["leaves"] for p in holders}
        if len(digests) > 1:
            reasons.append(f"step {step}: its processes saved different trees "
                           f"(leaf digests {sorted(digests)})")
            continue
        if geometry.sources(holders) is not None:
            if reasons:
                logger.info("LocalTier: restoring local step %d; newer steps are not "
                            "restorable: %s", step, "; ".join(reasons))
            return step
        if refused:
            first = min(refused)
            reasons.append(f"step {step} on process {first} was {refused[first]}")
        else:
            reasons.append(f"step {step} is held by processes {sorted(holders)} only, so slots "
                           f"{geometry.missing_slots(holders)} of replica axis "
                           f"{geometry.axis_name!r} have it on no process")
    logger.warning("LocalTier: no restorable local step: %s.",
                   "; ".join(reasons) if reasons else "no process holds any local step")
    return None


def restore(folder: LocalFolder, geometry: ReplicaGeometry, step: int, abstract_state: Any, *,
            limit_bytes: int, timeout_s: float) -> tuple[Any, dict[str, Any]]:
    """Collective: every process of the mesh calls this, in the same order, with `step`.

    Returns the state on `abstract_state`'s shardings and the items of `step`, bit-exact.
    """
    started = time.monotonic()
    abstract, treedef = _checked_abstract(abstract_state, geometry)
    members = geometry.members
    record = folder.records().get(step)
    why_not = None if record is None else _usable(record, geometry)
    holds = record is not None and why_not is None
    reports = gather_from_all({"holds": holds}, name="local-tier/holders", processes=members,
                              timeout_s=timeout_s)
    holders = sorted(p for p, r in reports.items() if r["holds"])
    sources = geometry.sources(holders)
    if sources is None:
        raise StepNotFoundError(
            f"Expected local step {step} on some replica of every slot, but it is held by "
            f"processes {holders} only (slots {geometry.missing_slots(holders)} have it "
            f"nowhere; this process {multihost.process_index()}: "
            f"{why_not or ('holds it' if holds else 'does not hold it')}). To fix, restore the "
            "step agree_on_restorable_step() returns, or the persistent tier.")
    everyone_holds = len(holders) == len(members)
    # Without a full set of holders, only the processes owning a chosen source device read:
    # the others receive their shards through the sum anyway.
    readers = members if everyone_holds else geometry.readers(sources)
    outcome: bool | BaseException = True
    state: Any = None
    items: dict[str, Any] | None = None
    if multihost.process_index() in readers:
        try:
            state, items = folder.read(step, abstract_state)
        except Exception as error:  # reported to every process before any collective
            outcome = error
    multihost.agree_on_success(outcome, name="local-tier/read", processes=members,
                               timeout_s=timeout_s)
    read_s = time.monotonic() - started
    if everyone_holds:
        logger.info("LocalTier: restored local step %d from every process's own folder in "
                    "%.3f s", step, read_s)
        assert items is not None
        return state, items
    leaves, items = _receive(state, items, abstract, geometry, list(readers), sources,
                             limit_bytes=limit_bytes, timeout_s=timeout_s)
    state = jax.tree_util.tree_unflatten(treedef, leaves)
    logger.info("LocalTier: restored local step %d: read by processes %s in %.3f s, sent to "
                "processes %s over replica axis %r in %.3f s", step, list(readers), read_s,
                [p for p in members if p not in holders], geometry.axis_name,
                time.monotonic() - started - read_s)
    return state, items


def _receive(state: Any, items: dict[str, Any] | None, abstract: list[jax.ShapeDtypeStruct],
             geometry: ReplicaGeometry, readers: list[int], sources: dict[int, int], *,
             limit_bytes: int, timeout_s: float) -> tuple[list[jax.Array], dict[str, Any]]:
    """Collective: the readers' shards (as a list of leaves) and items, on every process."""
    read = [] if state is None else jax.tree_util.tree_leaves(state)
    key_impls = {i: str(jax.random.key_impl(leaf)) for i, leaf in enumerate(read)
                 if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)}
    is_source = multihost.process_index() == readers[0]
    published = multihost.broadcast_one_to_some(
        {"items": items, "key_impls": {str(i): v for i, v in key_impls.items()}} if is_source
        else None, is_source=is_source, processes=geometry.members, timeout_s=timeout_s,
        name="local-tier/items")
    impls = {int(i): v for i, v in published["key_impls"].items()}
    data_abstract = [jax.eval_shape(jax.random.key_data, a) if i in impls else a
                     for i, a in enumerate(abstract)]
    data_abstract = [jax.ShapeDtypeStruct(d.shape, d.dtype, sharding=a.sharding)
                     for d, a in zip(data_abstract, abstract, strict=True)]
    sources_data: list[jax.Array | None] = (
        [jax.random.key_data(leaf) if i in impls else leaf for i, leaf in enumerate(read)]
        if read else [None] * len(abstract))
    positions = geometry.positions()
    reading = set(readers)

    def contributes(device: jax.Device) -> bool:
        replica, slot = positions[device.id]
        return device.process_index in reading and sources[slot] == replica

    summed = sum_over_replicas(sources_data, data_abstract, mesh=geometry.mesh,
                               axis_name=geometry.axis_name, contributes=contributes,
                               limit_bytes=limit_bytes, label="local-tier broadcast", log=logger)
    values = [jax.random.wrap_key_data(v, impl=impls[i]) if i in impls else v
              for i, v in enumerate(summed)]
    return values, dict(published["items"])


def _checked_abstract(abstract_state: Any, geometry: ReplicaGeometry
                      ) -> tuple[list[jax.ShapeDtypeStruct], Any]:
    """The target leaves, each with a NamedSharding over the tier's mesh, and the treedef."""
    entries, treedef = jax.tree_util.tree_flatten_with_path(abstract_state)
    found = []
    mesh = geometry.mesh
    for path, leaf in entries:
        sharding = getattr(leaf, "sharding", None)
        if not isinstance(leaf, jax.Array | jax.ShapeDtypeStruct) or not isinstance(
                sharding, jax.sharding.NamedSharding) or sharding.mesh.devices.shape != (
                mesh.devices.shape) or (sharding.mesh.devices != mesh.devices).any():
            raise InvalidArgumentError(
                f"Expected a jax.ShapeDtypeStruct (or jax.Array) with a NamedSharding over the "
                f"tier's global_mesh at tree path {jax.tree_util.keystr(path)} of "
                f"abstract_state, got {type(leaf).__name__} with sharding {sharding!r:.200}. To "
                "fix, build it with jax.ShapeDtypeStruct(shape, dtype, "
                "sharding=NamedSharding(global_mesh, spec)).")
        found.append(jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding))
    return found, treedef
