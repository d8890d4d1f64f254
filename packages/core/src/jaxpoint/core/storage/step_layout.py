"""The layout of a step folder: its metadata file and which of its entries are items.

A step holds `_CHECKPOINT_METADATA`, optional `_`-prefixed files (checksums, ...), a
commit marker on object stores, and one folder per item. This module is the one place
that decides which entries are item folders, for every layer that lists them.
"""

from __future__ import annotations

from jaxpoint.core.storage.commit import COMMIT_MARKER, is_tmp_name
from jaxpoint.core.storage.location import Location

STEP_METADATA_FILE = "_CHECKPOINT_METADATA"


def is_item_name(name: str) -> bool:
    """False for metadata files (`_...`), the commit marker and saves in flight."""
    return not name.startswith("_") and name != COMMIT_MARKER and not is_tmp_name(name)


def item_folders(step: Location) -> list[str]:
    """The names of the item folders directly under `step`, in listing order."""
    return [name for name in step.list_names() if is_item_name(name) and not (step / name).is_file()]


__all__ = ["STEP_METADATA_FILE", "is_item_name", "item_folders"]
