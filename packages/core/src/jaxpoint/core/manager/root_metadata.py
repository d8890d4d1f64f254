"""Manager-level metadata: `<root>/metadata/_ROOT_METADATA`, as Orbax writes it.

The file holds `{"internal_metadata": {...}, "custom_metadata": {...}}`; the custom part is
the `metadata=` a manager was built with. It is written once, by the first run that gives
metadata, so restarts never rewrite history; Orbax's older name `metadata/metadata` is
read when the current one is absent.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any

from jaxpoint.core.errors import CorruptCheckpointError, InvalidArgumentError
from jaxpoint.core.storage import Location, read_json

logger = logging.getLogger(__name__)

METADATA_FOLDER = "metadata"
ROOT_METADATA_FILE = "_ROOT_METADATA"
LEGACY_ROOT_METADATA_FILE = "metadata"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RootMetadata:
    """What `manager.metadata()` returns: the user's metadata and Orbax's internal fields."""

    custom_metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    internal_metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


def validated_custom_metadata(metadata: Mapping[str, Any] | None, *, what: str) -> dict[str, Any]:
    """Returns `metadata` as a dict after checking it is JSON with string keys."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"Expected {what} to be a dict, got {type(metadata).__name__}. To fix, pass a "
            "dict of JSON values, e.g. {'model': 'mlp'}."
        )
    try:
        return json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(
            f"Expected {what} to hold only JSON values (str keys; str, number, bool, None, "
            f"list, dict), got {dict(metadata)!r}: {error}. To fix, convert the values, e.g. "
            "arrays with .tolist()."
        ) from error


def _file(root: Location) -> Location:
    return root / METADATA_FOLDER / ROOT_METADATA_FILE


def read_root_metadata(root: Location) -> RootMetadata:
    """The root metadata under `root`, or an empty one when none was written."""
    folder = root / METADATA_FOLDER
    for name in (ROOT_METADATA_FILE, LEGACY_ROOT_METADATA_FILE):
        if (folder / name).is_file():
            raw = read_json(folder / name)
            break
    else:
        return RootMetadata()
    custom = raw.get("custom_metadata") or {}
    internal = raw.get("internal_metadata") or {}
    if not isinstance(custom, dict) or not isinstance(internal, dict):
        raise CorruptCheckpointError(
            f"Expected custom_metadata and internal_metadata to be JSON objects in "
            f"{folder}, found {type(custom).__name__} and {type(internal).__name__}. The file "
            "is corrupt; remove it to let the next manager with metadata= write it again."
        )
    # Orbax files from older writers may hold user keys at the top level.
    extra = {k: v for k, v in raw.items() if k not in ("custom_metadata", "internal_metadata")}
    return RootMetadata(custom_metadata={**extra, **custom}, internal_metadata=internal)


def needs_write(root: Location, custom_metadata: dict[str, Any]) -> bool:
    """True when `root` has no root metadata yet; warns when a different one is stored."""
    stored = read_root_metadata(root)
    if not (root / METADATA_FOLDER / ROOT_METADATA_FILE).is_file() and not (
            root / METADATA_FOLDER / LEGACY_ROOT_METADATA_FILE).is_file():
        return True
    if stored.custom_metadata != custom_metadata:
        logger.warning(
            "Root metadata at %s differs from the metadata= given (%r); keeping the stored "
            "%r, written by the run that created the directory.", _file(root), custom_metadata,
            stored.custom_metadata)
    return False


def write_root_metadata(root: Location, custom_metadata: dict[str, Any]) -> None:
    """Writes the root metadata file (primary process only)."""
    (root / METADATA_FOLDER).make_folder()
    _file(root).write_json({"internal_metadata": {}, "custom_metadata": custom_metadata})
