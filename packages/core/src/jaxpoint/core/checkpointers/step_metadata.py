"""`_CHECKPOINT_METADATA`: what a checkpoint folder holds, when it was written, its metrics."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxpoint.core.errors import CorruptCheckpointError
from jaxpoint.core.storage import Location, read_json
from jaxpoint.core.storage.step_layout import STEP_METADATA_FILE


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepMetadata:
    """`item_handlers` is one handler name, or a dict of item name to handler name."""

    item_handlers: str | dict[str, str] | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Save figures (see transfer_report.performance_metrics).
    performance_metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    init_timestamp_nsecs: int | None = None
    commit_timestamp_nsecs: int | None = None
    custom_metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Filled by `metadata()` calls from the item files; never stored in this file.
    item_metadata: Any = None

    def to_json(self) -> dict[str, Any]:
        stored = dataclasses.asdict(self)
        del stored["item_metadata"]
        return stored


def write_step_metadata(folder: Location, metadata: StepMetadata) -> None:
    (folder / STEP_METADATA_FILE).write_json(metadata.to_json())


def read_step_metadata(folder: Location) -> StepMetadata:
    raw = read_json(folder / STEP_METADATA_FILE)
    values = {}
    for field in dataclasses.fields(StepMetadata):
        if field.name != "item_metadata" and field.name in raw and raw[field.name] is not None:
            values[field.name] = raw[field.name]
    for name in ("metrics", "performance_metrics", "custom_metadata"):
        if not isinstance(values.get(name, {}), dict):
            raise CorruptCheckpointError(
                f"Expected {name} to be a JSON object in {folder / STEP_METADATA_FILE}, got "
                f"{type(values[name]).__name__}."
            )
    for name in ("init_timestamp_nsecs", "commit_timestamp_nsecs"):
        stamp = values.get(name)
        if stamp is not None and (not isinstance(stamp, int) or isinstance(stamp, bool)):
            raise CorruptCheckpointError(
                f"Expected {name} to be an integer in {folder / STEP_METADATA_FILE}, got "
                f"{stamp!r:.100}. The file is corrupt."
            )
    handlers = values.get("item_handlers")
    is_mapping = isinstance(handlers, dict) and all(
        isinstance(v, str) or v is None for v in handlers.values())
    if handlers is not None and not (isinstance(handlers, str) or is_mapping):
        raise CorruptCheckpointError(
            f"Expected item_handlers in {folder / STEP_METADATA_FILE} to be a handler name or "
            f"an object of item name to handler name, got {handlers!r:.200}. The file is corrupt."
        )
    return StepMetadata(**values)
