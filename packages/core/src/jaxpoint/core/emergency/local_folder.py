"""One process's local checkpoint folder: its committed steps, their records, their reads.

A local step is an ordinary jaxpoint checkpoint (so `verify`, `describe` and the core's
readers work on it), written by this process alone with its own commit:

  <directory>/<step name>/
    state/                    the state: global-shaped arrays holding only this process's
                              shards, of every replica it has devices of
    items/                    the JSON items (data-iterator position, configuration, ...)
    _CHECKPOINT_METADATA      custom_metadata["jaxpoint_local_tier"]: the `StepRecord`

The record says what recovery needs before it reads anything: the step, the process, the
mesh layout and the (replica, slot) of every device whose shards the step holds, and the
shape and dtype of every leaf.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

from jaxpoint.core.checkpointers.checkpointer import Checkpointer
from jaxpoint.core.checkpointers.step_metadata import read_step_metadata
from jaxpoint.core.emergency.replicas import MeshLayout
from jaxpoint.core.errors import (
    CheckpointError,
    CorruptCheckpointError,
    StepNotFoundError,
    StorageError,
)
from jaxpoint.core.handlers import Composite, CompositeCheckpointHandler
from jaxpoint.core.handlers.json_handler import JsonCheckpointHandler, JsonRestore
from jaxpoint.core.handlers.pytree import PyTreeCheckpointHandler, PyTreeRestore
from jaxpoint.core.inspection.step_names import StepNameFormat
from jaxpoint.core.storage import Location, commit_protocol_for, parse_tmp_name

logger = logging.getLogger(__name__)

RECORD_KEY = "jaxpoint_local_tier"
STATE_ITEM = "state"
ITEMS_ITEM = "items"
RECORD_VERSION = 1


class EveryReplicaTreeHandler(PyTreeCheckpointHandler):
    """The tree handler writing all of this process's shards, replica 0's or not."""

    writes_every_replica: ClassVar[bool] = True


def local_step_handler() -> CompositeCheckpointHandler:
    return CompositeCheckpointHandler(**{STATE_ITEM: EveryReplicaTreeHandler(),
                                         ITEMS_ITEM: JsonCheckpointHandler()})


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepRecord:
    """What one process's local step holds (stored in its `_CHECKPOINT_METADATA`)."""

    step: int
    process_index: int
    layout: MeshLayout
    positions: tuple[tuple[int, int], ...]  # (replica, slot) of each device it holds
    leaves: tuple[tuple[str, tuple[int, ...], str], ...]  # (tree path, shape, dtype)

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, "step": self.step,
                "process_index": self.process_index, "layout": self.layout.to_json(),
                "positions": [list(p) for p in self.positions],
                "leaves": [[path, list(shape), dtype] for path, shape, dtype in self.leaves]}

    @classmethod
    def from_json(cls, stored: Any, *, where: str) -> StepRecord:
        try:
            if stored["version"] != RECORD_VERSION:
                raise ValueError(f"version {stored['version']!r}, expected {RECORD_VERSION}")
            return cls(step=int(stored["step"]), process_index=int(stored["process_index"]),
                       layout=MeshLayout.from_json(stored["layout"]),
                       positions=tuple((int(r), int(s)) for r, s in stored["positions"]),
                       leaves=tuple((str(p), tuple(int(n) for n in shape), str(d))
                                    for p, shape, d in stored["leaves"]))
        except (KeyError, TypeError, ValueError) as error:
            raise CorruptCheckpointError(
                f"Expected a local-tier record in {where}, got {stored!r:.300} ({error}). "
                "The step was not written by LocalTier or is corrupt; delete it.") from error


class LocalFolder:
    """This process's local directory: lists, reads and deletes its committed steps.

    Nothing here talks to other processes.
    """

    def __init__(self, directory: Location, name_format: StepNameFormat) -> None:
        self.directory = directory
        self.name_format = name_format

    def step_path(self, step: int) -> Location:
        return self.directory / self.name_format.build_name(step)

    def steps(self) -> list[int]:
        """Committed steps, oldest first; a missing directory has none."""
        if self.directory.is_file():
            raise StorageError(
                f"Expected the local directory {self.directory} to be a folder, found a file. "
                "To fix, remove the file (or pass another directory).")
        if not self.directory.exists():
            return []
        found = []
        for name in self.directory.list_names():
            step = self.name_format.parse_name(name)
            if step is not None and commit_protocol_for(self.directory / name).is_committed(
                    self.directory / name):
                found.append(step)
        return sorted(found)

    def record(self, step: int) -> StepRecord:
        path = self.step_path(step)
        stored = read_step_metadata(path).custom_metadata.get(RECORD_KEY)
        return StepRecord.from_json(stored, where=str(path))

    def readable_record(self, step: int) -> StepRecord | None:
        """The record of committed `step`; None (logged) when it is missing or unreadable."""
        if step not in self.steps():
            return None
        try:
            return self.record(step)
        except CheckpointError as error:
            logger.warning("Local step %d in %s is not usable for recovery: %s", step,
                           self.directory, error)
            return None

    def records(self) -> dict[int, StepRecord]:
        """The record of every committed step; unreadable ones are logged and left out."""
        found = {}
        for step in self.steps():
            record = self.readable_record(step)
            if record is not None:
                found[step] = record
        return found

    def read(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Reads this process's shards of `step` onto `abstract_state`'s shardings, and the items."""
        path = self.step_path(step)
        if step not in self.steps():
            raise StepNotFoundError(
                f"Expected local step {step} committed at {path}, found none. To fix, restore "
                f"a step from local_steps() = {self.steps()}.")
        restored = Checkpointer(local_step_handler()).restore(path, args=Composite(**{
            STATE_ITEM: PyTreeRestore(item=abstract_state), ITEMS_ITEM: JsonRestore()}))
        return restored[STATE_ITEM], dict(restored[ITEMS_ITEM] or {})

    def remove_abandoned_saves(self) -> list[str]:
        """Removes the work folders of saves whose process died (a kill mid-save); returns
        their names. The folder is this process's alone, so another host's work folders
        (a disk moved to a new machine) are abandoned too; a live writer's on this host stays."""
        if not self.directory.exists():
            return []
        removed = []
        for name in self.directory.list_names():
            tmp = parse_tmp_name(name)
            if tmp is not None and (tmp.is_abandoned or tmp.is_from_other_host):
                (self.directory / name).remove()
                removed.append(name)
        if removed:
            logger.info("Removed the unfinished local saves %s from %s (their process died).",
                        removed, self.directory)
        return removed

    def delete(self, step: int) -> None:
        path = self.step_path(step)
        commit_protocol_for(path).uncommit(path)
