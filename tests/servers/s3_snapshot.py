"""Saves and restores the objects held by moto's in-memory S3 backend.

moto keeps all state in memory, so a plain restart would lose every object. Real S3
never loses an acknowledged write, and a "server restarted mid-save" test is only
meaningful if the objects written before the outage are still there afterwards. The
launcher therefore dumps every bucket's latest object versions on SIGTERM and loads
them back on start. Each object keeps its ETag, which is TensorStore's storage
generation for S3, so conditional writes prepared before a restart still apply after it.

Not kept: old versions, in-progress multipart uploads, ACLs, tags and custom metadata.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

from moto.s3.models import FakeKey, s3_backends


@dataclasses.dataclass(frozen=True, kw_only=True)
class SavedObject:
    key: str
    value: bytes
    etag: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class SavedBucket:
    name: str
    account_id: str
    partition: str
    region: str
    objects: tuple[SavedObject, ...]


def capture() -> list[SavedBucket]:
    """Copies every live bucket and the latest version of each of its objects."""
    saved = []
    for name, (partition, account_id) in list(s3_backends.bucket_accounts.items()):
        bucket = s3_backends[account_id][partition].buckets.get(name)
        if bucket is None:
            continue
        objects = tuple(
            SavedObject(key=key, value=item.value, etag=item.etag.strip('"'))
            for key, item in bucket.keys.items()
            if isinstance(item, FakeKey)
        )
        saved.append(
            SavedBucket(
                name=name,
                account_id=account_id,
                partition=partition,
                region=bucket.region_name,
                objects=objects,
            )
        )
    return saved


def load(buckets: list[SavedBucket]) -> None:
    """Recreates `buckets` in an empty backend, ETags included."""
    for saved in buckets:
        backend = s3_backends[saved.account_id][saved.partition]
        backend.create_bucket(saved.name, saved.region)
        for item in saved.objects:
            backend.put_object(saved.name, item.key, item.value, etag=item.etag)


def save_to(path: Path) -> None:
    """Writes `capture()` to `path` atomically, so a crash never leaves half a file."""
    partial = path.with_suffix(path.suffix + ".partial")
    with partial.open("wb") as out:
        pickle.dump(capture(), out, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, path)


def load_from(path: Path) -> None:
    """Loads a file written by `save_to`; a missing file means a first start."""
    if not path.exists():
        return
    with path.open("rb") as saved:
        load(pickle.load(saved))
