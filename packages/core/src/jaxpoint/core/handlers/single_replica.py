"""Single-replica restore: one replica reads the checkpoint, the others receive it.

Data-parallel training keeps a full copy of the state on every replica (a slice of the
mesh along its replica axis). A plain restore makes every replica read the same bytes
from storage. With `SingleReplicaArrayRestoreArgs` on a leaf, only the processes that own
devices of the primary replica read that leaf's array data; the other replicas receive it
through one jitted all-reduce over the replica axis: every device of the primary replica
contributes its shard, every other device contributes zeros, and the sum, taken on the
arrays' bits so that it is exact for every dtype, lands with the target sharding.

Call sequence, every process of the mesh, in the same order:
  1. the processes of the primary replica read (into that replica's devices only), every
     process reads its leaves restored without single-replica args;
  2. the first reading process publishes the restored shapes and dtypes;
  3. every process reports its outcome to `agree_on_success`: if any read failed (missing
     or corrupt files), every process raises `ProcessFailureError` here, before any device
     collective, so nobody waits forever in one (the deadlock of google/orbax#3181);
  4. batches of leaves, each at most `broadcast_memory_limit_bytes` per device, are stacked
     along a new replica dimension and summed over it in one jitted program each; a batch's
     inputs are freed before the next one starts, so at most one batch exists twice (see
     `multihost.replica_sum`, shared with the emergency local tier).

Usage, with orbax's names:

    handler = PyTreeCheckpointHandler(single_replica_handler=SingleReplicaArrayHandler(
        replica_axis_index=0, primary_replica_id=0, broadcast_memory_limit_bytes=2**28))
    restore_args = jax.tree.map(
        lambda x: SingleReplicaArrayRestoreArgs(sharding=x.sharding), abstract_state)
    state = Checkpointer(handler).restore(path, args=PyTreeRestore(
        abstract_state, restore_args=restore_args))

Without `single_replica_handler`, `PyTreeCheckpointHandler` uses `SingleReplicaArrayHandler()`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxpoint.core import multihost
from jaxpoint.core.errors import CheckpointError, InvalidArgumentError
from jaxpoint.core.handlers.leaf_args import ArrayRestoreArgs, RestoreArgs
from jaxpoint.core.handlers.pytree_metadata import TreeRecord
from jaxpoint.core.handlers.pytree_restore import execute_plans
from jaxpoint.core.handlers.restore_plan import LeafPlan, RestorePlan, SavedExtras
from jaxpoint.core.handlers.type_handler import ArrayHandler
from jaxpoint.core.multihost.replica_sum import broadcast_batches as broadcast_batches
from jaxpoint.core.multihost.replica_sum import sum_over_replicas
from jaxpoint.core.storage import Location
from jaxpoint.core.validation import require_int_at_least, require_positive_int

logger = logging.getLogger(__name__)

# Per device and batch: large enough that the all-reduce runs near bandwidth, small
# enough that the extra copy of one batch fits beside the restored state.
DEFAULT_BROADCAST_MEMORY_LIMIT_BYTES = 256 * 2**20
DEFAULT_TIMEOUT_S = 600.0


@dataclasses.dataclass(kw_only=True)
class SingleReplicaArrayRestoreArgs(ArrayRestoreArgs):
    """Restore a leaf as a jax.Array with `sharding`, read by one replica and broadcast.

    `sharding` (or `mesh` + `mesh_axes`) must be a `NamedSharding` whose spec does not use
    the replica axis. `replica_axis_index` / `primary_replica_id` override the handler's
    for this leaf (None: the handler's). `single_replica_sharding` is accepted for orbax
    compatibility: when given, it must cover exactly the primary replica's devices.
    """

    single_replica_sharding: jax.sharding.NamedSharding | None = None
    replica_axis_index: int | None = None
    primary_replica_id: int | None = None


def has_single_replica_args(restore_args: Any) -> bool:
    """Whether any leaf of `restore_args` asks for a single-replica restore."""
    leaves = jax.tree_util.tree_leaves(restore_args, is_leaf=lambda x: isinstance(x, RestoreArgs))
    return any(isinstance(leaf, SingleReplicaArrayRestoreArgs) for leaf in leaves)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplicaLayout:
    """Where the replicas of one mesh live: the replica axis, the readers, the members."""

    mesh: jax.sharding.Mesh
    axis: int
    primary: int
    readers: tuple[int, ...]  # processes owning a device of the primary replica
    members: tuple[int, ...]  # processes owning any device of the mesh

    @property
    def axis_name(self) -> str:
        return self.mesh.axis_names[self.axis]

    @property
    def replica_count(self) -> int:
        return self.mesh.devices.shape[self.axis]

    @property
    def is_reader(self) -> bool:
        return multihost.process_index() in self.readers

    def primary_sharding(self, spec: jax.sharding.PartitionSpec) -> jax.sharding.NamedSharding:
        """`spec` over the primary replica's devices only (the readers' target)."""
        devices = np.take(self.mesh.devices, [self.primary], axis=self.axis)
        return jax.sharding.NamedSharding(jax.sharding.Mesh(devices, self.mesh.axis_names), spec)


class SingleReplicaArrayHandler(ArrayHandler):
    """Restores the leaves with `SingleReplicaArrayRestoreArgs` of a tree item.

    `replica_axis_index`: the mesh axis along which the state is replicated.
    `primary_replica_id`: the replica whose processes read from storage.
    `broadcast_memory_limit_bytes`: the most bytes per device one broadcast batch moves
    (None: `DEFAULT_BROADCAST_MEMORY_LIMIT_BYTES`); a larger leaf goes alone.
    `timeout_s`: how long processes wait for the readers' outcome; it must cover the
    primary replica's read of every array.
    """

    def __init__(self, *, replica_axis_index: int = 0, primary_replica_id: int = 0,
                 broadcast_memory_limit_bytes: int | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        _check_index(replica_axis_index, "replica_axis_index")
        _check_index(primary_replica_id, "primary_replica_id")
        limit = require_positive_int(
            broadcast_memory_limit_bytes, allow_none=True, what="broadcast_memory_limit_bytes",
            fix="pass e.g. broadcast_memory_limit_bytes=2**28 (256 MiB)")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
            raise InvalidArgumentError(
                f"Expected timeout_s > 0 seconds for SingleReplicaArrayHandler, got "
                f"{timeout_s!r}. To fix, pass more than the primary replica's read takes."
            )
        self.replica_axis_index = replica_axis_index
        self.primary_replica_id = primary_replica_id
        self.broadcast_memory_limit_bytes = limit or DEFAULT_BROADCAST_MEMORY_LIMIT_BYTES
        self.timeout_s = float(timeout_s)

    def restore_plan(self, item: Location, record: TreeRecord, extras: SavedExtras,
                     plan: RestorePlan) -> Any:
        """Collective: every process of the mesh calls this, in the same order.

        Runs the normal restore plan (see `restore_plan.build_restore_plan`), except that
        its leaves with `SingleReplicaArrayRestoreArgs` are read by the primary replica only
        and broadcast; the others are restored as usual, each process reading its own.
        """
        plans = list(plan.leaves)
        single = [i for i, a in enumerate(plan.leaf_args)
                  if isinstance(a, SingleReplicaArrayRestoreArgs)]
        single_args = [plan.leaf_args[i] for i in single]
        layout = self._layout([plans[i] for i in single], single_args)
        values = self._restore_plans(item, record, extras, plans, single, layout, single_args)
        return plan.rebuild(values)

    def _restore_plans(self, item: Location, record: TreeRecord, extras: SavedExtras,
                       plans: list[LeafPlan], single: list[int], layout: ReplicaLayout,
                       single_args: list[SingleReplicaArrayRestoreArgs]) -> list[Any]:
        chosen = set(single)
        own = [i for i in range(len(plans)) if i not in chosen]
        values: list[Any] = [None] * len(plans)
        started = time.monotonic()
        outcome: bool | BaseException = True
        read: list[jax.Array] = []
        published = None
        try:
            for i, value in zip(own, execute_plans(item, record, [plans[i] for i in own], extras),
                                strict=True):
                values[i] = value
            if layout.is_reader:
                read = self._read_primary(item, record, extras, [plans[i] for i in single],
                                          single_args, layout)
                published = [[list(a.shape), jnp.dtype(a.dtype).name] for a in read]
        except Exception as error:  # reported to every process before any collective
            outcome = error
        shapes = multihost.broadcast_one_to_some(
            published, is_source=multihost.process_index() == layout.readers[0],
            processes=layout.members, timeout_s=self.timeout_s, name="single-replica/shapes")
        if outcome is True and not layout.is_reader:
            outcome = _check_published(shapes, [plans[i] for i in single], item)
        if isinstance(outcome, BaseException) and len(layout.members) == 1:
            raise outcome  # nobody else to tell
        multihost.agree_on_success(outcome, name="single-replica/read", processes=layout.members,
                                   timeout_s=self.timeout_s)
        abstract = [jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=plans[i].sharding)
                    for (shape, dtype), i in zip(shapes, single, strict=True)]
        agreed = time.monotonic()
        for i, value in zip(single, self._broadcast(read, abstract, layout), strict=True):
            values[i] = value
        read_s, broadcast_s = agreed - started, time.monotonic() - agreed
        logger.info("single-replica restore of %d leaves from %s: read by processes %s in %.3f s, "
                    "broadcast in %.3f s", len(single), item, list(layout.readers), read_s,
                    broadcast_s, extra={"read_s": read_s, "broadcast_s": broadcast_s})
        return values

    def _layout(self, plans: list[LeafPlan], leaf_args: list[SingleReplicaArrayRestoreArgs]
                ) -> ReplicaLayout:
        """Checks the leaves' shardings (same on every process) and finds the replicas."""
        found: ReplicaLayout | None = None
        for plan, args in zip(plans, leaf_args, strict=True):
            axis = self.replica_axis_index if args.replica_axis_index is None else args.replica_axis_index
            primary = self.primary_replica_id if args.primary_replica_id is None else args.primary_replica_id
            _check_index(axis, f"replica_axis_index at tree path {plan.path}")
            _check_index(primary, f"primary_replica_id at tree path {plan.path}")
            layout = _replica_layout(plan, axis=axis, primary=primary)
            if found is not None and (layout.mesh, layout.axis, layout.primary) != (
                    found.mesh, found.axis, found.primary):
                raise InvalidArgumentError(
                    f"Expected every SingleReplicaArrayRestoreArgs of one restore to share one "
                    f"mesh, replica axis and primary replica, but tree path {plan.path} has mesh "
                    f"{dict(layout.mesh.shape)}, axis {layout.axis}, primary {layout.primary} "
                    f"while an earlier leaf has mesh {dict(found.mesh.shape)}, axis {found.axis}, "
                    f"primary {found.primary}. To fix, restore leaves of other meshes in a "
                    "separate restore."
                )
            found = layout
        if found is None:
            raise InvalidArgumentError(
                "Expected at least one SingleReplicaArrayRestoreArgs leaf for a single-replica "
                "restore, got none. To fix, restore with the tree handler's restore instead."
            )
        if multihost.process_index() not in found.members:
            raise InvalidArgumentError(
                f"Expected process {multihost.process_index()} to own a device of the mesh of "
                f"the single-replica restore, but the mesh spans processes {list(found.members)}."
                " To fix, call restore only on those processes."
            )
        return found

    def _read_primary(self, item: Location, record: TreeRecord, extras: SavedExtras,
                      plans: list[LeafPlan], leaf_args: list[SingleReplicaArrayRestoreArgs],
                      layout: ReplicaLayout) -> list[jax.Array]:
        """Reads the leaves onto the primary replica's devices (readers only)."""
        reads = []
        for plan, args in zip(plans, leaf_args, strict=True):
            sharding = layout.primary_sharding(_named_sharding(plan).spec)
            given = args.single_replica_sharding
            if given is not None:
                if given.device_set != sharding.device_set:
                    raise InvalidArgumentError(
                        f"Expected single_replica_sharding at tree path {plan.path} to cover the "
                        f"devices of primary replica {layout.primary}, got other devices. To fix, "
                        "drop single_replica_sharding: it is computed from sharding."
                    )
                sharding = given
            reads.append(dataclasses.replace(plan, sharding=sharding))
        arrays = execute_plans(item, record, reads, extras)
        for plan, array in zip(plans, arrays, strict=True):
            if not isinstance(array, jax.Array) or jax.dtypes.issubdtype(array.dtype,
                                                                          jax.dtypes.prng_key):
                raise InvalidArgumentError(
                    f"Expected an array of numbers at tree path {plan.path} of {item} for a "
                    f"single-replica restore, got {type(array).__name__} of dtype "
                    f"{getattr(array, 'dtype', None)}. To fix, restore random keys and "
                    "non-array leaves with ArrayRestoreArgs or RestoreArgs."
                )
        return arrays

    def _broadcast(self, read: list[jax.Array], abstract: list[jax.ShapeDtypeStruct],
                   layout: ReplicaLayout) -> list[jax.Array]:
        """Collective: the primary replica's shards, summed over the replica axis in batches."""
        primary = set(np.take(layout.mesh.devices, layout.primary, axis=layout.axis).flat)
        sources: list[jax.Array | None] = list(read) if read else [None] * len(abstract)
        return sum_over_replicas(sources, abstract, mesh=layout.mesh,
                                 axis_name=layout.axis_name,
                                 contributes=lambda device: device in primary,
                                 limit_bytes=self.broadcast_memory_limit_bytes,
                                 label="single-replica broadcast", log=logger)


def _check_index(value: Any, name: str) -> None:
    require_int_at_least(value, 0, what=name, fix=f"pass e.g. {name.split()[0]}=0")


def _named_sharding(plan: LeafPlan) -> jax.sharding.NamedSharding:
    sharding = plan.sharding
    if not isinstance(sharding, jax.sharding.NamedSharding):
        raise InvalidArgumentError(
            f"Expected a NamedSharding at tree path {plan.path} for a single-replica restore, "
            f"got {type(sharding).__name__}. To fix, pass SingleReplicaArrayRestoreArgs("
            "sharding=NamedSharding(mesh, spec)) with the replica axis in the mesh."
        )
    return sharding


def _replica_layout(plan: LeafPlan, *, axis: int, primary: int) -> ReplicaLayout:
    sharding = _named_sharding(plan)
    mesh = sharding.mesh
    if not isinstance(mesh, jax.sharding.Mesh):
        raise InvalidArgumentError(
            f"Expected a NamedSharding over a Mesh of devices at tree path {plan.path} for a "
            f"single-replica restore, got one over {type(mesh).__name__}. To fix, build the "
            "sharding from jax.sharding.Mesh(devices, axis_names)."
        )
    if axis >= mesh.devices.ndim:
        raise InvalidArgumentError(
            f"Expected replica_axis_index < {mesh.devices.ndim} for the mesh {dict(mesh.shape)} "
            f"at tree path {plan.path}, got {axis}. To fix, pass the index of the mesh axis "
            "along which the state is replicated."
        )
    name = mesh.axis_names[axis]
    used = {n for part in sharding.spec if part is not None
            for n in (part if isinstance(part, tuple) else (part,))}
    if name in used:
        raise InvalidArgumentError(
            f"Expected the state at tree path {plan.path} to be replicated along replica axis "
            f"{name!r}, but its spec {sharding.spec} shards it there. To fix, pass the index "
            "of an axis the spec does not use as replica_axis_index."
        )
    count = mesh.devices.shape[axis]
    if primary >= count:
        raise InvalidArgumentError(
            f"Expected primary_replica_id < {count} (replicas along axis {name!r}) at tree path "
            f"{plan.path}, got {primary}. To fix, pass a replica in [0, {count})."
        )
    primary_devices = np.take(mesh.devices, primary, axis=axis).flat
    readers = tuple(sorted({d.process_index for d in primary_devices}))
    members = tuple(sorted({d.process_index for d in mesh.devices.flat}))
    return ReplicaLayout(mesh=mesh, axis=axis, primary=primary, readers=readers, members=members)


def _check_published(shapes: Any, plans: list[LeafPlan], item: Location) -> bool | BaseException:
    """A receiver's check of the readers' shapes against its own target (True when fine)."""
    if shapes is None:
        return True  # the first reader failed; it reports why at the agreement
    if len(shapes) != len(plans):
        return CheckpointError(
            f"Expected {len(plans)} single-replica leaves from the readers of {item}, got "
            f"{len(shapes)}. To fix, pass the same target and restore_args on every process."
        )
    for plan, (shape, _) in zip(plans, shapes, strict=True):
        if plan.shape is not None and tuple(plan.shape) != tuple(shape):
            return InvalidArgumentError(
                f"Expected shape {tuple(plan.shape)} at tree path {plan.path} on process "
                f"{multihost.process_index()}, but the primary replica restored {tuple(shape)}. "
                "To fix, pass the same target and restore_args on every process."
            )
    return True
