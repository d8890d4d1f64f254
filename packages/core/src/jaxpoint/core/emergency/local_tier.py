"""The local tier: every process checkpoints its own shards to its own fast storage.

Each process writes the shards its devices hold, of every replica (not only replica 0's,
as a shared checkpoint does), plus the JSON items, into its own directory: a host's disk
or a RAM disk (`/dev/shm`, any tmpfs). A save needs no other process: each one commits its
own step folder atomically (tmp folder, then rename), so a step killed mid-save is never
listed. After a restart, `agree_on_restorable_step` and `restore` (collective, see
`recovery`) rebuild the newest step that every slot of the mesh still has on some
replica, sending the shards to the processes that lost them.

Call order, every process: `save` (any number), `wait_until_finished`; after a restart,
`agree_on_restorable_step` then `restore`, in the same order on every process; `close`.
The two collective calls never leave a process waiting for one that failed: a failure on
any process (its folder, its last background save, its read) raises `ProcessFailureError`
on every process, naming the process and the fix.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
from jaxpoint.core import multihost
from jaxpoint.core.checkpointers.async_checkpointer import AsyncCheckpointer
from jaxpoint.core.checkpointers.checkpointer import Checkpointer
from jaxpoint.core.checkpointers.options import AsyncOptions, MultiprocessingOptions
from jaxpoint.core.emergency import recovery
from jaxpoint.core.emergency.local_folder import (
    ITEMS_ITEM,
    RECORD_KEY,
    STATE_ITEM,
    LocalFolder,
    StepRecord,
    local_step_handler,
)
from jaxpoint.core.emergency.replicas import ReplicaGeometry
from jaxpoint.core.errors import InvalidArgumentError, StepAlreadyExistsError, StorageError
from jaxpoint.core.handlers import Composite, JsonSave, PyTreeSave
from jaxpoint.core.inspection.step_names import StepNameFormat, standard_name_format
from jaxpoint.core.storage import Location
from jaxpoint.core.tree.flatten import flatten_with_paths
from jaxpoint.core.validation import require_positive_int

logger = logging.getLogger(__name__)

PyTree = Any
_BARRIER_PREFIX = "jaxpoint-local-tier"
METRICS_KEY = "metrics"


class LocalTier:
    """Per-process local checkpoints of a state sharded over `global_mesh`, and recovery.

    `directory`: this process's own folder (on a host's disk or a tmpfs; processes sharing
    a machine need different folders), created if missing. `replica_axis_index`: the mesh
    axis along which the state is replicated. `max_to_keep`: the newest committed steps
    kept once `wait_until_finished` returns (None: all); a save in flight may make it one
    more. Each process prunes alone, so with 1 a process killed mid-save can leave its
    slots in no step the others still hold: keep 2 where a lost save must not cost the tier.
    `step_name_format`: how step folders are named (default: the step number).
    `enable_async_checkpointing`: `save` returns once the shards are staged in host memory
    and writes in the background (`async_options.timeout_secs` bounds the write).
    `broadcast_memory_limit_bytes`: the most bytes per device one recovery broadcast batch
    moves. `timeout_s`: how long recovery waits for the other processes. `read_only`: the
    folder is only read (recovery works as usual); it is not created, nothing in it is
    removed, and `save` / `delete` refuse.
    """

    def __init__(self, directory: str | os.PathLike[str], *, global_mesh: jax.sharding.Mesh,
                 replica_axis_index: int = 0, max_to_keep: int | None = None,
                 step_name_format: StepNameFormat | None = None,
                 enable_async_checkpointing: bool = True,
                 async_options: AsyncOptions | None = None,
                 broadcast_memory_limit_bytes: int = recovery.DEFAULT_BROADCAST_MEMORY_LIMIT_BYTES,
                 timeout_s: float = recovery.DEFAULT_TIMEOUT_S, read_only: bool = False) -> None:
        if not isinstance(global_mesh, jax.sharding.Mesh):
            raise InvalidArgumentError(
                f"Expected global_mesh to be a jax.sharding.Mesh, got "
                f"{type(global_mesh).__name__}. To fix, pass the mesh the state is sharded over.")
        ndim = global_mesh.devices.ndim
        if isinstance(replica_axis_index, bool) or not isinstance(replica_axis_index, int) or not (
                0 <= replica_axis_index < ndim):
            raise InvalidArgumentError(
                f"Expected replica_axis_index in [0, {ndim}) for the mesh "
                f"{dict(global_mesh.shape)}, got {replica_axis_index!r}. To fix, pass the index "
                "of the mesh axis along which the state is replicated.")
        require_positive_int(max_to_keep, allow_none=True, what="LocalTier max_to_keep",
                             fix="pass e.g. max_to_keep=2, or None to keep every step")
        require_positive_int(broadcast_memory_limit_bytes, what="broadcast_memory_limit_bytes",
                             fix="pass e.g. 2**28 (256 MiB per device)")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0:
            raise InvalidArgumentError(
                f"Expected timeout_s > 0 seconds for LocalTier, got {timeout_s!r}. To fix, pass "
                "more than the slowest process takes to read its local step.")
        if not isinstance(enable_async_checkpointing, bool):
            raise InvalidArgumentError(
                f"Expected enable_async_checkpointing to be a bool, got "
                f"{enable_async_checkpointing!r}. To fix, pass True or False.")
        self._geometry = ReplicaGeometry(mesh=global_mesh, replica_axis_index=replica_axis_index)
        self._read_only = read_only
        self._folder = LocalFolder(
            Location.parse(directory) if read_only else _created_folder(directory),
            step_name_format or standard_name_format())
        if not read_only:
            # Memory matters on a RAM disk: a save killed mid-way must not hold it forever.
            self._folder.remove_abandoned_saves()
        else:
            max_to_keep = None
        # Steps of an earlier run; a save of an equal or older step replaces them (see save).
        self._earlier_run_steps = set(self._folder.steps())
        self._max_to_keep = max_to_keep
        self._broadcast_limit_bytes = broadcast_memory_limit_bytes
        self._timeout_s = float(timeout_s)
        # Every process commits its own folder (primary_host=None): no barrier in a save.
        options = MultiprocessingOptions(primary_host=None,
                                         barrier_sync_key_prefix=_BARRIER_PREFIX)
        self._checkpointer: Checkpointer
        if enable_async_checkpointing:
            self._checkpointer = AsyncCheckpointer(local_step_handler(),
                                                   multiprocessing_options=options,
                                                   async_options=async_options)
        else:
            if async_options is not None:
                raise InvalidArgumentError(
                    "Expected async_options only with enable_async_checkpointing=True, got "
                    "both async_options and enable_async_checkpointing=False. To fix, drop "
                    "async_options or enable asynchronous checkpointing.")
            self._checkpointer = Checkpointer(local_step_handler(), multiprocessing_options=options)
        if self._geometry.replica_count == 1:
            logger.warning(
                "LocalTier: the mesh %s has 1 replica along axis %r, so a process that loses its "
                "local folder cannot be recovered from the local tier (use a persistent tier).",
                dict(global_mesh.shape), self._geometry.axis_name)

    @property
    def directory(self) -> Location:
        return self._folder.directory

    @property
    def global_mesh(self) -> jax.sharding.Mesh:
        return self._geometry.mesh

    @property
    def replica_axis_index(self) -> int:
        return self._geometry.replica_axis_index

    @property
    def read_only(self) -> bool:
        return self._read_only

    def save(self, step: int, state: PyTree, items: Mapping[str, Any] | None = None, *,
             metrics: Mapping[str, Any] | None = None) -> None:
        """Writes this process's shards of `state` and the `items` as local step `step`.

        Not collective: no other process is waited for, but every process should save the
        same steps, with the same tree, so that recovery finds them. `state`: a pytree of
        jax.Arrays (typed random keys included) sharded over `global_mesh`; `items`: name ->
        JSON-serialisable value. Returns once staged when asynchronous; the step is listed
        once committed. `metrics`: JSON values kept with the step (`metrics(step)`).
        Steps found at construction that are not older than `step` belong
        to a run that was not resumed from them: they are deleted (one warning line).
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InvalidArgumentError(
                f"Expected step to be an int >= 0, got {step!r}. To fix, pass the training step.")
        self._refuse_if_read_only(f"save local step {step}")
        items = self._check_items(items)
        metadata: dict[str, Any] = {}
        if metrics is not None:
            metadata[METRICS_KEY] = self._check_items(metrics, what="metrics")
        record = self._record(step, state)
        self._checkpointer.wait_until_finished()
        self._remove_earlier_run_steps(from_step=step)
        self._apply_max_to_keep()
        if step in self._folder.steps():
            raise StepAlreadyExistsError(
                f"Expected no local step {step} in {self.directory}, found one saved by this "
                "LocalTier. To fix, save a new step or delete this one first.")
        args = Composite(**{STATE_ITEM: PyTreeSave(state), ITEMS_ITEM: JsonSave(items)})
        try:
            self._checkpointer.save(self._folder.step_path(step), args=args,
                                    custom_metadata={RECORD_KEY: record.to_json(), **metadata},
                                    step=step)
        except (OSError, StorageError) as error:
            raise StorageError(
                f"Expected to start local step {step} in {self.directory} on process "
                f"{multihost.process_index()}, but the folder refused it: "
                f"{type(error).__name__}: {error}. To fix, make the directory writable with "
                "room for one more step (or pass another directory).") from error

    def _remove_earlier_run_steps(self, *, from_step: int) -> None:
        """Deletes the steps >= `from_step` an earlier run left: an abandoned future that
        would otherwise block this step or outlive the new ones under max_to_keep."""
        stale = sorted(s for s in self._earlier_run_steps if s >= from_step)
        if not stale:
            return
        logger.warning("LocalTier: saving step %d in %s deletes the local steps %s an earlier "
                       "run left (this run did not resume from them).", from_step,
                       self.directory, stale)
        for step in stale:
            self._folder.delete(step)
        self._earlier_run_steps.difference_update(stale)

    def _refuse_if_read_only(self, what: str) -> None:
        if self._read_only:
            raise InvalidArgumentError(
                f"Expected a writable local tier to {what} in {self.directory}, but it is "
                "read_only. To fix, pass LocalCheckpointOptions(read_only=False), or save to "
                "the persistent tier only.")

    def _check_items(self, items: Mapping[str, Any] | None, *,
                     what: str = "items") -> dict[str, Any]:
        if items is None:
            return {}
        entry = "item" if what == "items" else f"{what} entry"
        if not isinstance(items, Mapping) or not all(isinstance(k, str) for k in items):
            raise InvalidArgumentError(
                f"Expected {what} to be a mapping of str names to JSON values, got "
                f"{type(items).__name__}. To fix, pass e.g. items={{'data': {{'position': 7}}}}.")
        for name, value in items.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError) as error:
                raise InvalidArgumentError(
                    f"Expected a JSON-serialisable value for {entry} {name!r}, got "
                    f"{type(value).__name__} ({error}). To fix, convert it to dicts, lists, str, "
                    "numbers, bool or None (e.g. arr.tolist()), or put arrays in the state."
                ) from error
        return dict(items)

    def _record(self, step: int, state: PyTree) -> StepRecord:
        entries, _ = flatten_with_paths(state)
        mesh = self._geometry.mesh
        leaves = []
        for path, leaf in entries:
            sharding = getattr(leaf, "sharding", None)
            if not isinstance(leaf, jax.Array) or not self._geometry.places(sharding):
                raise InvalidArgumentError(
                    f"Expected a jax.Array with a NamedSharding over the tier's global_mesh at "
                    f"tree path {path} of local step {step}, got {type(leaf).__name__} with "
                    f"sharding {sharding!r:.200}. To fix, place every leaf on global_mesh "
                    "(jax.device_put with NamedSharding(global_mesh, spec)); save other values "
                    "as items.")
            if self._geometry.axis_name in _axes_of(sharding.spec):
                raise InvalidArgumentError(
                    f"Expected the state at tree path {path} to be replicated along the replica "
                    f"axis {self._geometry.axis_name!r}, but its spec {sharding.spec} shards it "
                    "there. To fix, shard it over the other axes, or pass the index of the "
                    "replicated axis as replica_axis_index.")
            leaves.append((str(path), tuple(int(n) for n in leaf.shape), str(leaf.dtype)))
        positions = self._geometry.positions()
        own = sorted(positions[d.id] for d in mesh.devices.flat
                     if d.process_index == multihost.process_index())
        return StepRecord(step=step, process_index=multihost.process_index(),
                          layout=self._geometry.layout, positions=tuple(own), leaves=tuple(leaves))

    def wait_until_finished(self) -> None:
        """Blocks until the save in flight is committed; raises if it failed."""
        self._checkpointer.wait_until_finished()
        self._apply_max_to_keep()

    def check_for_errors(self) -> None:
        """Raises the failure of a finished background save, once."""
        self._checkpointer.check_for_errors()

    def local_steps(self) -> list[int]:
        """The committed steps in this process's folder, oldest first. Not collective."""
        return self._folder.steps()

    def metrics(self, step: int) -> dict[str, Any] | None:
        """The metrics saved with this process's local step `step` (None: saved without)."""
        return self._folder.custom_metadata(step).get(METRICS_KEY)

    def item_metadata(self, step: int) -> dict[str, Any]:
        """{"state": tree metadata, <item>: None, ...} of this process's local step `step`."""
        return self._folder.item_metadata(step)

    def agree_on_restorable_step(self) -> int | None:
        """Collective: every process calls this, in the same order.

        The newest step for which every shard of the state is present on some process; the
        same on every process; None when there is none (or the saved mesh layout differs
        from `global_mesh`, said in one log line).
        """
        return recovery.agree_on_restorable_step(self._folder, self._geometry,
                                                 timeout_s=self._timeout_s,
                                                 settle=self.wait_until_finished)

    def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict[str, Any]]:
        """Collective: every process calls this, in the same order, with the same `step`.

        Returns the state on `abstract_state`'s shardings and the items of `step`. Processes
        holding the step read their own shards; the others receive them from a replica that
        has them, bit-exact.
        """
        return recovery.restore(self._folder, self._geometry, step, abstract_state,
                                limit_bytes=self._broadcast_limit_bytes,
                                timeout_s=self._timeout_s, settle=self.wait_until_finished)

    def delete(self, step: int) -> None:
        """Deletes this process's local step `step` (not collective); a missing one is fine."""
        self._refuse_if_read_only(f"delete local step {step}")
        self._checkpointer.wait_until_finished()
        self._folder.delete(step)

    def _apply_max_to_keep(self) -> None:
        if self._max_to_keep is None:
            return
        steps = self._folder.steps()
        for step in steps[:max(0, len(steps) - self._max_to_keep)]:
            self._folder.delete(step)

    def close(self) -> None:
        """Waits for the save in flight, then applies max_to_keep."""
        self._checkpointer.close()
        self._apply_max_to_keep()

    def __enter__(self) -> LocalTier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _created_folder(directory: str | os.PathLike[str]) -> Location:
    """The local directory, created if missing; a clear error when it cannot be."""
    location = Location.parse(directory)
    try:
        if location.is_file():
            raise NotADirectoryError(f"{location} is a file")
        location.make_folder()
    except (OSError, StorageError) as error:
        raise InvalidArgumentError(
            f"Expected a local directory LocalTier can create and write at {location} on "
            f"process {multihost.process_index()}, but {type(error).__name__}: {error}. To fix, "
            "pass a folder on this host's disk or RAM disk (e.g. /dev/shm/<run>/<process>) "
            "that this process may write.") from error
    return location


def _axes_of(spec: jax.sharding.PartitionSpec) -> set[str]:
    return {str(n) for part in spec if part is not None
            for n in (part if isinstance(part, tuple) else (part,))}
