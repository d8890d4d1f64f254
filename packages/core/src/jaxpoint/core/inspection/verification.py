"""`verify(path)`: read a whole checkpoint back and check every byte against its metadata.

What is checked, per item (a single item at the root, or one folder per item):
  - `_CHECKPOINT_METADATA` parses and names the items the step holds;
  - a PyTree item (standard, pytree, array, random keys) through its handler's check
    (`handlers/pytree_check.py`): every metadata file, every OCDBT database, every
    chunk, every array read back completely;
  - other items (JSON, proto, custom handlers): every JSON file parses within bounds;
    files no check is known for are reported as warnings.
Legacy zarr2 arrays (orbax's default) and orbax's zarr3 arrays carry no chunk checksum:
they are read completely, which catches truncation and undecodable data but not a
flipped byte inside an uncompressed chunk.

The first problem found raises `CorruptCheckpointError` naming the item, the parameter
and the file or key; an environment failure (permissions, network) raises StorageError.
"""

from __future__ import annotations

import dataclasses
import os

from jaxpoint.core.checkpointers.save_pipeline import ensure_committed
from jaxpoint.core.checkpointers.step_metadata import read_step_metadata
from jaxpoint.core.errors import CorruptCheckpointError
from jaxpoint.core.handlers import JsonCheckpointHandler
from jaxpoint.core.handlers.item_report import ItemReport
from jaxpoint.core.handlers.pytree_check import verify_tree
from jaxpoint.core.handlers.pytree_metadata import METADATA_FILE
from jaxpoint.core.handlers.registry import handler_for_typestr
from jaxpoint.core.storage import Location, read_json
from jaxpoint.core.storage.checksums import CHECKSUM_FILE, check_checksums
from jaxpoint.core.storage.step_layout import STEP_METADATA_FILE, is_item_name, item_folders

_MAX_FOLDER_DEPTH = 4
# Files that hold JSON whatever the item's handler (orbax's metadata and metrics items).
_JSON_FILE_NAMES = ("metadata", "metrics")


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerificationReport:
    """The result of a `verify` that found nothing wrong."""

    path: str
    items: tuple[ItemReport, ...]
    warnings: tuple[str, ...] = ()

    @property
    def arrays(self) -> int:
        return sum(item.arrays for item in self.items)

    @property
    def array_bytes(self) -> int:
        return sum(item.array_bytes for item in self.items)

    @property
    def metadata_files(self) -> int:
        return sum(len(item.metadata_files) for item in self.items)


def verify(path: str | os.PathLike[str] | Location, *,
           max_in_flight_bytes: int = 256 * 2**20) -> VerificationReport:
    """Reads the committed checkpoint at `path` completely and validates all its metadata.

    Raises CorruptCheckpointError naming the item, parameter and file or key of the first
    problem; CheckpointNotFoundError / UncommittedCheckpointError when `path` holds no
    committed checkpoint. Memory stays below about `max_in_flight_bytes` of array data.

    >>> import jaxpoint.core as ocp, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> ocp.save(path, {"w": np.arange(4.0)})
    >>> verify(path).arrays
    1
    """
    location = Location.parse(path)
    ensure_committed(location)
    warnings: list[str] = []
    if check_checksums(location) is None:
        warnings.append(f"{location} has no {CHECKSUM_FILE} (not written by jaxpoint): JSON "
                        "metadata values and legacy zarr files are validated, not checksummed")
    handlers: object = None
    if (location / STEP_METADATA_FILE).exists():
        handlers = read_step_metadata(location).item_handlers
    else:
        warnings.append(f"{location} has no {STEP_METADATA_FILE} (written by an old orbax?)")
    checker = _ItemChecker(max_in_flight_bytes=max_in_flight_bytes, warnings=warnings)
    if (location / METADATA_FILE).exists() or not isinstance(handlers, dict):
        if handlers is None and not (location / METADATA_FILE).exists():
            raise CorruptCheckpointError(
                f"Expected {METADATA_FILE} or {STEP_METADATA_FILE} in {location}, found "
                f"neither (it holds {location.list_names()[:20]}). Pass a checkpoint folder "
                "(a step), not the directory above it."
            )
        items = [checker.check(location, "", handlers if isinstance(handlers, str) else None)]
    else:
        items = _check_composite(location, handlers, checker)
    return VerificationReport(path=str(location), items=tuple(items), warnings=tuple(warnings))


def _check_composite(location: Location, handlers: dict[str, str | None],
                     checker: _ItemChecker) -> list[ItemReport]:
    folders = item_folders(location)
    missing = sorted(set(handlers) - set(folders))
    if missing:
        raise CorruptCheckpointError(
            f"{location / STEP_METADATA_FILE} records items {missing} but {location} has no "
            f"folder for them (it has {folders}). The checkpoint is incomplete or its "
            "metadata is damaged; restore an earlier checkpoint."
        )
    return [checker.check(location / name, name, handlers.get(name)) for name in folders]


class _ItemChecker:
    """Checks one item folder; keeps the read budget and the warnings of the whole run."""

    def __init__(self, *, max_in_flight_bytes: int, warnings: list[str]) -> None:
        self._budget = max(1, max_in_flight_bytes)
        self._warnings = warnings

    def check(self, folder: Location, name: str, typestr: str | None, depth: int = 0) -> ItemReport:
        label = f"item {name!r}" if name else "the item"
        try:
            if (folder / METADATA_FILE).exists():
                return verify_tree(folder, name=name, max_in_flight_bytes=self._budget)
            if typestr is not None and handler_for_typestr(typestr) is None:
                self._warnings.append(f"{label} of {folder.parent} has handler {typestr!r}, "
                                      "which is not registered here")
            return self._check_files(folder, name, typestr, depth)
        except CorruptCheckpointError as error:
            raise CorruptCheckpointError(f"{label.capitalize()} at {folder} is corrupt: {error}") from error

    def _check_files(self, folder: Location, name: str, typestr: str | None, depth: int) -> ItemReport:
        is_json = typestr is not None and handler_for_typestr(typestr) is JsonCheckpointHandler
        parsed: list[str] = []
        unchecked: list[str] = []
        nested: list[ItemReport] = []
        for child in folder.list_names():
            location = folder / child
            if not is_item_name(child) and not child.startswith("_"):
                continue  # the commit marker, a save in flight
            if not location.is_file():
                if depth >= _MAX_FOLDER_DEPTH:
                    raise CorruptCheckpointError(
                        f"Expected folders at most {_MAX_FOLDER_DEPTH} deep in an item, found "
                        f"deeper ones at {location}. The checkpoint is damaged or not one.")
                nested.append(self.check(location, f"{name}/{child}" if name else child, None, depth + 1))
            elif is_json or child in _JSON_FILE_NAMES or child.endswith(".json"):
                read_json(location, expect=object)
                parsed.append(str(location))
            else:
                unchecked.append(str(location))
        if unchecked:
            self._warnings.append(f"no checks known for {unchecked[:5]}: only tree and JSON items "
                                  "are validated")
        return ItemReport(
            name=name, kind="json" if parsed and not unchecked and not nested else "files",
            metadata_files=tuple(parsed) + tuple(f for r in nested for f in r.metadata_files),
            arrays=sum(r.arrays for r in nested), chunks=sum(r.chunks for r in nested),
            array_bytes=sum(r.array_bytes for r in nested),
            unchecked_files=tuple(unchecked) + tuple(f for r in nested for f in r.unchecked_files))


__all__ = ["ItemReport", "VerificationReport", "verify"]
