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

Every step that can fail on one process alone (listing or reading its folder, a failed
background save) runs before an agreement (`agree_on_success`): a failure raises on every
process, naming the process, instead of leaving the others waiting at the next collective.

Call sequence of `agree_on_restorable_step`, every process, in the same order:
  1. agreement: every process listed its folder;  2. exchange: the steps each can serve.
Call sequence of `restore`, every process of the mesh, in the same order:
  1. agreement: every process looked up the step;  2. exchange: who holds it, with which
     leaves (holders that saved different trees raise everywhere);
  3. readers read their shards and items; agreement on the reads;
  4. the lowest reader broadcasts the items (and random-key implementations);
  5. batches of leaves are summed over the replica axis.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import jax
from jaxpoint.core import multihost
from jaxpoint.core.emergency.local_folder import LocalFolder, StepRecord
from jaxpoint.core.emergency.replicas import ReplicaGeometry
from jaxpoint.core.errors import (
    CheckpointError,
    InvalidArgumentError,
    StepNotFoundError,
    TreeMismatchError,
)
from jaxpoint.core.multihost.exchange import gather_from_all
from jaxpoint.core.multihost.replica_sum import sum_over_replicas

logger = logging.getLogger(__name__)

# Per device and batch: as the single-replica restore (see handlers/single_replica.py).
DEFAULT_BROADCAST_MEMORY_LIMIT_BYTES = 256 * 2**20
DEFAULT_TIMEOUT_S = 600.0
_FOLDER_FIX = ("make that folder a readable directory (or remove it: that process then receives "
               "its shards from another replica) or fix what failed its last save, then call "
               "again on every process")


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


def _run_everywhere(work: Callable[[], Any], *, name: str, doing: str, fix: str,
                    geometry: ReplicaGeometry, timeout_s: float) -> Any:
    """Runs this process's `work`, then agrees with every process that each one's worked.

    Collective. A failure anywhere raises `ProcessFailureError` on every process, naming
    the failed process, what it was `doing` and the `fix`, so that no process goes on to
    a collective the failed one never reaches.
    """
    outcome: bool | BaseException = True
    result = None
    try:
        result = work()
    except Exception as error:
        outcome = CheckpointError(
            f"{doing} on process {multihost.process_index()} failed: {type(error).__name__}: "
            f"{str(error).rstrip('.')}. Recovery needs every process: {fix}.")
        outcome.__cause__ = error
    multihost.agree_on_success(outcome, name=name, processes=geometry.members,
                               timeout_s=timeout_s)
    return result


def agree_on_restorable_step(folder: LocalFolder, geometry: ReplicaGeometry, *,
                             timeout_s: float, settle: Callable[[], None] = lambda: None
                             ) -> int | None:
    """Collective: every process of the mesh calls this, in the same order.

    The newest step whose every slot some holding process covers, the same on every
    process; None when there is none, with one log line saying why. `settle` (waiting
    for this process's save in flight) runs first; its failure raises everywhere.
    """
    def listed() -> dict[str, Any]:
        settle()
        return _report(folder, geometry)

    report = _run_everywhere(
        listed, name="local-tier/listed", geometry=geometry, timeout_s=timeout_s,
        doing=f"listing the local steps in {folder.directory}", fix=_FOLDER_FIX)
    reports = gather_from_all(report, name="local-tier/steps", processes=geometry.members,
                              timeout_s=timeout_s)
    steps = sorted({int(s) for r in reports.values() for s in r["steps"]}, reverse=True)
    reasons: list[str] = []
    for step in steps:
        entries = {p: r["steps"][str(step)] for p, r in reports.items() if str(step) in r["steps"]}
        refused = {p: e["why_not"] for p, e in entries.items() if e["why_not"] is not None}
        holders = [p for p in entries if p not in refused]
        differing = _differing_trees(step, {p: entries[p]["leaves"] for p in holders}, folder,
                                     geometry, timeout_s=timeout_s)
        if differing is not None:
            reasons.append(f"step {step}: {differing}")
            continue
        if geometry.sources(holders) is not None:
            if reasons:
                logger.warning("LocalTier: restoring local step %d; newer steps are not "
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
            limit_bytes: int, timeout_s: float, settle: Callable[[], None] = lambda: None
            ) -> tuple[Any, dict[str, Any]]:
    """Collective: every process of the mesh calls this, in the same order, with `step`.

    Returns the state on `abstract_state`'s shardings and the items of `step`, bit-exact.
    `settle` runs first, as in `agree_on_restorable_step`.
    """
    started = time.monotonic()
    members = geometry.members

    def looked_up() -> tuple[list[jax.ShapeDtypeStruct], Any, StepRecord | None]:
        abstract, treedef = _checked_abstract(abstract_state, geometry)
        settle()
        return abstract, treedef, folder.readable_record(step)

    abstract, treedef, record = _run_everywhere(
        looked_up, name="local-tier/looked-up", geometry=geometry, timeout_s=timeout_s,
        doing=f"checking abstract_state and looking up local step {step} in "
              f"{folder.directory}",
        fix="correct what that message names (abstract_state, that folder, or what failed its "
            "last save), then call restore again on every process")
    why_not = None if record is None else _usable(record, geometry)
    holds = record is not None and why_not is None
    reports = gather_from_all(
        {"step": step, "holds": holds, "leaves": _leaves_digest(record) if holds else None},
        name="local-tier/holders", processes=members, timeout_s=timeout_s)
    asked = {p: r["step"] for p, r in reports.items()}
    if len(set(asked.values())) > 1:
        raise InvalidArgumentError(
            f"Expected every process to restore the same local step, got {asked} (process: "
            "step). To fix, pass every process the step agree_on_restorable_step() returned.")
    holders = sorted(p for p, r in reports.items() if r["holds"])
    differing = _differing_trees(step, {p: reports[p]["leaves"] for p in holders}, folder,
                                 geometry, timeout_s=timeout_s)
    if differing is not None:
        raise TreeMismatchError(
            f"Expected every process holding local step {step} to have saved the same tree, "
            f"but {differing}. The step cannot be rebuilt consistently. To fix, restore the "
            "step agree_on_restorable_step() returns (it skips such steps), and make every "
            "process save the same state tree.")
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
    is_reader = multihost.process_index() in readers
    state, items = _run_everywhere(
        lambda: folder.read(step, abstract_state) if is_reader else (None, None),
        name="local-tier/read", geometry=geometry, timeout_s=timeout_s,
        doing=f"reading local step {step} from {folder.step_path(step)}",
        fix="check that abstract_state matches the saved state; if the step is damaged, "
            "delete that folder (another replica then sends its shards if one holds the "
            "step) or restore another step, on every process")
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


def _differing_trees(step: int, digests: dict[int, str], folder: LocalFolder,
                     geometry: ReplicaGeometry, *, timeout_s: float) -> str | None:
    """Says which processes saved which tree for `step`, and the first leaf (path, shape,
    dtype) that differs; None when all saved one tree.

    Collective when the digests differ (the same on every process): the first process of
    each tree sends its leaves, so that every process can name the difference.
    """
    by_digest: dict[str, list[int]] = {}
    for process, digest in sorted(digests.items()):
        by_digest.setdefault(digest, []).append(process)
    if len(by_digest) < 2:
        return None
    senders = [processes[0] for processes in by_digest.values()]
    record = folder.readable_record(step) if multihost.process_index() in senders else None
    leaves = gather_from_all(None if record is None else record.to_json()["leaves"],
                             name="local-tier/differing-trees", processes=geometry.members,
                             timeout_s=timeout_s)
    first, others = senders[0], senders[1:]
    groups = " and ".join(str(processes) for processes in by_digest.values())
    return (f"its processes {groups} saved different trees: "
            + "; ".join(_first_difference(first, leaves[first], other, leaves[other])
                        for other in others))


def _first_difference(a: int, leaves_a: Any, b: int, leaves_b: Any) -> str:
    if leaves_a is None or leaves_b is None:  # its record vanished meanwhile
        return f"processes {a} and {b} hold different leaves"
    by_path_a = {path: (tuple(shape), dtype) for path, shape, dtype in leaves_a}
    by_path_b = {path: (tuple(shape), dtype) for path, shape, dtype in leaves_b}
    for path in sorted(set(by_path_a) | set(by_path_b)):
        if by_path_a.get(path) != by_path_b.get(path):
            def said(found: Any) -> str:
                return "no leaf" if found is None else f"shape {found[0]} {found[1]}"
            return (f"at tree path {path} process {a} has {said(by_path_a.get(path))}, "
                    f"process {b} has {said(by_path_b.get(path))}")
    return f"processes {a} and {b} hold different leaves"


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
    for path, leaf in entries:
        sharding = getattr(leaf, "sharding", None)
        if not isinstance(leaf, jax.Array | jax.ShapeDtypeStruct) or not geometry.places(
                sharding):
            raise InvalidArgumentError(
                f"Expected a jax.ShapeDtypeStruct (or jax.Array) with a NamedSharding over the "
                f"tier's global_mesh at tree path {jax.tree_util.keystr(path)} of "
                f"abstract_state, got {type(leaf).__name__} with sharding {sharding!r:.200}. To "
                "fix, build it with jax.ShapeDtypeStruct(shape, dtype, "
                "sharding=NamedSharding(global_mesh, spec)).")
        found.append(jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding))
    return found, treedef
