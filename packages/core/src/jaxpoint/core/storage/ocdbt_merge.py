"""Merging per-process OCDBT databases into the item's database (primary only).

The copy moves B-tree references, not data: the merged manifest points at data files
that stay under each `ocdbt.process_<i>/` folder, so a merge costs metadata, not bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import tensorstore as ts
from jaxpoint.core.errors import StorageError
from jaxpoint.core.storage.array_format import (
    OCDBT_CONFIG,
    PROCESS_DB_PREFIX,
    process_database_spec,
)
from jaxpoint.core.storage.context import write_context
from jaxpoint.core.storage.location import Location

# The merged database's manifest, directly under an item folder written with OCDBT.
OCDBT_MANIFEST_FILE = "manifest.ocdbt"


def is_ocdbt_checkpoint(path: str | os.PathLike[str] | Location) -> bool:
    """True when the item folder at `path` holds a merged OCDBT database."""
    return (Location.parse(path) / OCDBT_MANIFEST_FILE).exists()


def written_process_indices(item: Location) -> list[int]:
    """Process indices whose databases exist under `item`."""
    indices = []
    for name in item.list_names():
        suffix = name[len(PROCESS_DB_PREFIX):] if name.startswith(PROCESS_DB_PREFIX) else ""
        if suffix.isdigit():
            indices.append(int(suffix))
    return sorted(indices)


def merge_process_databases(item: Location, process_indices: Iterable[int] | None = None) -> None:
    """Copies every process database under `item` into its root database in one transaction."""
    indices = list(process_indices) if process_indices is not None else written_process_indices(item)
    if not indices:
        return
    context = write_context(fsync=item.options.fsync)
    root_spec = {"driver": "ocdbt", "base": item.kvstore_spec(), "config": dict(OCDBT_CONFIG)}
    try:
        children = [ts.KvStore.open(process_database_spec(item, i), context=context) for i in indices]
        root = ts.KvStore.open(root_spec, context=context).result()
        transaction = ts.Transaction(atomic=True)
        copies = [child.result().experimental_copy_range_to(root.with_transaction(transaction))
                  for child in children]
        for copy in copies:
            copy.result()
        transaction.commit_async().result()
    except Exception as error:
        raise StorageError(
            f"Could not merge the per-process databases {indices} of {item}: {error}"
        ) from error
