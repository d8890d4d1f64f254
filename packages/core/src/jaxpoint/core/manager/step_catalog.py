"""The manager's list of checkpoints: steps, folder names, commit times and metrics.

Loaded from the directory (the source of truth, through `inspection.list_steps`) and kept
up to date by the manager's own saves and deletions, so listing never touches storage.
A step whose entry or `_CHECKPOINT_METADATA` cannot be read is damaged: logged once, left
out of the steps and kept on disk. Thread-safe: the manager's background thread updates
it when an asynchronous save fails.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterable
from typing import Any

from jaxpoint.core.checkpointers.step_metadata import StepMetadata, read_step_metadata
from jaxpoint.core.errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError
from jaxpoint.core.inspection import DamagedStep, StepNameFormat, list_steps
from jaxpoint.core.manager.checkpoint_info import CheckpointInfo
from jaxpoint.core.storage import Location, read_json

logger = logging.getLogger(__name__)

METRICS_ITEM = "metrics"
_EPOCH = datetime.datetime.fromtimestamp(0, tz=datetime.UTC)


def _step_metadata(folder: Location) -> StepMetadata:
    try:
        return read_step_metadata(folder)
    except CheckpointNotFoundError:
        return StepMetadata()  # written by a tool that records none


def read_step_metrics(folder: Location, step_metadata: StepMetadata | None = None
                      ) -> dict[str, Any] | None:
    """The metrics saved with the step at `folder`, or None.

    The `metrics/metrics` JSON item is what Orbax reads, so it wins; metrics recorded only
    in `_CHECKPOINT_METADATA` are used when the item is absent.
    """
    item = folder / METRICS_ITEM / METRICS_ITEM
    if item.is_file():
        value = read_json(item, expect=object)
        if not isinstance(value, dict):
            raise CorruptCheckpointError(
                f"Expected the metrics saved at {item} to be a JSON object, found "
                f"{type(value).__name__}. The file is corrupt; delete the step or rewrite it."
            )
        return value
    recorded = (step_metadata or _step_metadata(folder)).metrics
    return dict(recorded) if recorded else None


def _commit_time(metadata: StepMetadata) -> datetime.datetime:
    nanos = metadata.commit_timestamp_nsecs or metadata.init_timestamp_nsecs
    if nanos is None:
        return _EPOCH  # unknown: treated as the oldest possible
    return datetime.datetime.fromtimestamp(nanos / 1e9, tz=datetime.UTC)


class StepCatalog:
    """Checkpoints of one directory, oldest step first."""

    def __init__(self, root: Location, name_format: StepNameFormat) -> None:
        self._root = root
        self._name_format = name_format
        self._lock = threading.Lock()
        self._infos: dict[int, CheckpointInfo] = {}
        self._names: dict[int, str] = {}
        self._damaged: list[DamagedStep] = []
        self._reported: set[tuple[str, str]] = set()

    def reload(self, *, exclude: Iterable[int] = ()) -> None:
        """Reads the committed steps from storage, leaving out `exclude` (being deleted)."""
        skip = set(exclude)
        listing = list_steps(self._root, name_format=self._name_format)
        infos, names, damaged = {}, {}, list(listing.damaged)
        for step, name in listing.committed.items():
            if step in skip:
                continue
            try:
                metadata = _step_metadata(self._root / name)
                metrics = read_step_metrics(self._root / name, metadata)
            except CheckpointError as error:
                reason = f"its metadata cannot be read: {str(error).rstrip('.')}"
                damaged.append(DamagedStep(step=step, name=name, reason=reason))
                continue
            infos[step] = CheckpointInfo(step=step, time=_commit_time(metadata), metrics=metrics)
            names[step] = name
        self._report(damaged)
        with self._lock:
            self._infos, self._names, self._damaged = infos, names, damaged

    def _report(self, damaged: list[DamagedStep]) -> None:
        for entry in damaged:
            if (entry.name, entry.reason) not in self._reported:
                self._reported.add((entry.name, entry.reason))
                logger.warning(
                    "Ignoring %s: it is named like step %d, but %s. It is not listed or "
                    "restored, and jaxpoint never deletes it; inspect it, then repair, move or "
                    "delete it by hand.", self._root / entry.name, entry.step, entry.reason)

    def damaged(self) -> list[DamagedStep]:
        with self._lock:
            return list(self._damaged)

    def infos(self) -> list[CheckpointInfo]:
        with self._lock:
            return [self._infos[step] for step in sorted(self._infos)]

    def steps(self) -> list[int]:
        with self._lock:
            return sorted(self._infos)

    def __contains__(self, step: int) -> bool:
        with self._lock:
            return step in self._infos

    def name_of(self, step: int) -> str:
        """The folder name of `step`: as found on disk, else as the format builds it."""
        with self._lock:
            return self._names.get(step) or self._name_format.build_name(step)

    def add(self, info: CheckpointInfo) -> None:
        with self._lock:
            self._infos[info.step] = info
            self._names[info.step] = self._name_format.build_name(info.step)

    def remove(self, steps: Iterable[int]) -> dict[int, str]:
        """Forgets `steps`; returns their folder names."""
        removed = {}
        with self._lock:
            for step in steps:
                if step in self._infos:
                    del self._infos[step]
                    removed[step] = self._names.pop(step)
        return removed
