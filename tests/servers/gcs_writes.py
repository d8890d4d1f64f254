"""Object writes the shipped emulator lacks or gets wrong, written against its `Storage`.

- `media_upload` replaces ``uploadType=media``: the shipped one crashes on an empty
  body (``len(None)``), and TensorStore uploads empty values that way.
- `move_object` implements ``objects.move`` (``.../o/SRC/moveTo/o/DST``), an atomic
  rename within one bucket.
Both rely on the launcher's lock for atomicity with the precondition checks.
"""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

import google_crc32c
from gcp_storage_emulator import settings
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.storage import Storage


def error(response: Any, status: HTTPStatus, message: str) -> None:
    """Answers with a GCS-style JSON error body (none on 304, which may not have one)."""
    response.status = status
    if status == HTTPStatus.NOT_MODIFIED:
        return
    response.json(
        {
            "error": {
                "code": status.value,
                "message": message,
                "errors": [{"domain": "global", "reason": status.phrase, "message": message}],
            }
        }
    )


def object_or_none(storage: Storage, bucket: str, name: str) -> dict[str, Any] | None:
    try:
        return storage.get_file_obj(bucket, name)
    except NotFound:
        return None


def object_resource(
    *, base_url: str, bucket: str, name: str, content: bytes, content_type: str
) -> dict[str, Any]:
    """A fresh object resource at a new generation, as objects.insert returns it."""
    generation = time.time_ns()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    quoted = quote(name, safe="")
    md5 = base64.b64encode(hashlib.md5(content).digest()).decode()
    crc32c = base64.b64encode(google_crc32c.Checksum(content).digest()).decode()
    return {
        "kind": "storage#object",
        "id": f"{bucket}/{name}/{generation}",
        "selfLink": f"{settings.API_ENDPOINT}/b/{bucket}/o/{quoted}",
        "mediaLink": f"{base_url}{settings.DOWNLOAD_API_ENDPOINT}/b/{bucket}/o/{quoted}"
        f"?generation={generation}&alt=media",
        "name": name,
        "bucket": bucket,
        "generation": str(generation),
        "metageneration": "1",
        "contentType": content_type,
        "timeCreated": now,
        "updated": now,
        "timeStorageClassUpdated": now,
        "storageClass": "STANDARD",
        "size": str(len(content)),
        "md5Hash": md5,
        "crc32c": crc32c,
        "etag": md5,
        "acl": [],
    }


def media_upload(request: Any, response: Any, storage: Storage) -> None:
    """objects.insert with ``uploadType=media``: the body is the whole object."""
    bucket = request.params["bucket_name"]
    names = request.query.get("name")
    if not names:
        return error(response, HTTPStatus.BAD_REQUEST, "Expected a 'name' query parameter")
    content = request.data or b""
    if not isinstance(content, bytes):  # the emulator parses JSON bodies eagerly
        return error(response, HTTPStatus.BAD_REQUEST, "Expected a raw media body")
    obj = object_resource(
        base_url=request.base_url,
        bucket=bucket,
        name=names[0],
        content=content,
        content_type=request.get_header("Content-Type") or "application/octet-stream",
    )
    try:
        storage.create_file(bucket, names[0], content, obj)
    except NotFound:
        return error(response, HTTPStatus.NOT_FOUND, f"No such bucket: {bucket}")
    response.json(obj)


def move_object(request: Any, response: Any, storage: Storage) -> None:
    """objects.move: the source disappears and the destination gets a new generation."""
    bucket = request.params["bucket_name"]
    source_name = request.params["object_id"]
    destination_name = request.params["dest_object_id"]
    source = object_or_none(storage, bucket, source_name)
    if source is None:
        return error(response, HTTPStatus.NOT_FOUND, f"No such object: {bucket}/{source_name}")
    content = storage.get_file(bucket, source_name)
    moved = object_resource(
        base_url=request.base_url,
        bucket=bucket,
        name=destination_name,
        content=content,
        content_type=source.get("contentType") or "application/octet-stream",
    )
    moved["metadata"] = source.get("metadata")
    storage.create_file(bucket, destination_name, content, moved)
    storage.delete_file(bucket, source_name)
    response.json(moved)
