"""gcp-storage-emulator's route table, patched to behave like GCS where TensorStore looks.

`patched_routes()` rewraps the emulator's own handlers instead of editing them:
- Object reads carry ``x-goog-generation`` / ``x-goog-metageneration`` headers; without
  them TensorStore reads generation 0 and OCDBT fails with "Malformed StorageGeneration".
- ``ifGenerationMatch``-style preconditions are enforced (`servers.gcs_preconditions`)
  on reads, uploads, deletes, patches, compose, copy and rewrite.
- Listing honours ``startOffset``, ``endOffset``, ``maxResults`` and ``pageToken``.
  TensorStore lists a prefix as the key range [startOffset, endOffset) with no
  ``prefix`` parameter, so the shipped handler returned the whole bucket (and
  ``delete_range`` on a prefix deleted every object in it).
- ``uploadType=media`` accepts empty bodies and ``moveTo`` exists (`servers.gcs_writes`).
The routes are served under a lock by `servers.gcs_launcher`, so each check-then-write
is atomic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator import settings
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.storage import Storage

from servers import gcs_preconditions
from servers.gcs_writes import error, media_upload, move_object, object_or_none

Handler = Callable[[Any, Any, Storage], None]
Route = tuple[str, Mapping[str, Handler]]
# (bucket, object name) a precondition applies to, or None when it cannot be known.
_Locator = Callable[[Any], tuple[str, str] | None]

_DEFAULT_PAGE_SIZE = 1000


def _path_object(request: Any) -> tuple[str, str]:
    return request.params["bucket_name"], request.params["object_id"]


def _destination_object(request: Any) -> tuple[str, str]:
    params = request.params
    return params["dest_bucket_name"], params["dest_object_id"]


def _upload_object(request: Any) -> tuple[str, str] | None:
    name = request.query.get("name", [None])[0]
    if name is None and isinstance(request.data, dict):
        name = (request.data.get("meta") or request.data).get("name")
    return (request.params["bucket_name"], name) if name else None


def _guarded(
    handler: Handler, *, target: _Locator, source: _Locator | None = None, is_read: bool = False
) -> Handler:
    """Runs `handler` only if the request's preconditions hold for its objects."""

    def guarded(request: Any, response: Any, storage: Storage) -> None:
        checks = [(target(request), False)]
        if source is not None:
            checks.append((source(request), True))
        for located, is_source in checks:
            if located is None:
                continue
            obj = object_or_none(storage, *located)
            try:
                failed = gcs_preconditions.check(
                    obj, request.query, is_read=is_read, source=is_source
                )
            except ValueError as invalid:
                return error(response, HTTPStatus.BAD_REQUEST, f"Invalid precondition: {invalid}")
            if failed is not None:
                outcome, parameter = failed
                return error(
                    response,
                    HTTPStatus(outcome.value),
                    f"Precondition {parameter} failed for gs://{located[0]}/{located[1]}",
                )
        handler(request, response, storage)

    return guarded


def _with_generation_headers(handler: Handler) -> Handler:
    """Adds the generation headers GCS sends with every object read."""

    def read(request: Any, response: Any, storage: Storage) -> None:
        handler(request, response, storage)
        if response.status not in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
            return
        obj = object_or_none(storage, *_path_object(request))
        if obj is not None:
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj["metageneration"])

    return read


def list_objects(request: Any, response: Any, storage: Storage) -> None:
    """objects.list with key-range offsets and paging, as GCS implements them."""
    query = {key: values[0] for key, values in request.query.items()}
    try:
        items, prefixes = storage.get_file_list(
            request.params["bucket_name"],
            query.get("prefix"),
            query.get("delimiter"),
            query.get("matchGlob"),
        )
    except NotFound:
        return error(response, HTTPStatus.NOT_FOUND, "No such bucket")
    entries = sorted(
        [(obj["name"], obj) for obj in items] + [(p, None) for p in prefixes],
        key=lambda entry: entry[0],
    )
    lower = query.get("pageToken") or query.get("startOffset") or ""
    upper = query.get("endOffset")
    entries = [
        entry
        for entry in entries
        if (entry[0] > lower if "pageToken" in query else entry[0] >= lower)
        and (upper is None or entry[0] < upper)
    ]
    page_size = int(query.get("maxResults", _DEFAULT_PAGE_SIZE))
    page, rest = entries[:page_size], entries[page_size:]
    body: dict[str, Any] = {
        "kind": "storage#objects",
        "items": [obj for _, obj in page if obj is not None],
        "prefixes": [name for name, obj in page if obj is None],
    }
    if rest:
        body["nextPageToken"] = page[-1][0]
    response.json(body)


def _insert(request: Any, response: Any, storage: Storage) -> None:
    if request.query.get("uploadType") == ["media"]:
        media_upload(request, response, storage)
    else:
        objects.insert(request, response, storage)


def _move_routes() -> list[Route]:
    routes = []
    for prefix in (settings.API_ENDPOINT, ""):
        pattern = (
            rf"^{prefix}/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>.+?)"
            rf"/moveTo/o/(?P<dest_object_id>.+)$"
        )
        guarded = _guarded(
            move_object,
            target=lambda r: (r.params["bucket_name"], r.params["dest_object_id"]),
            source=_path_object,
        )
        routes.append((pattern, {"POST": guarded}))
    return routes


def _replacements() -> dict[Handler, Handler]:
    def read(handler: Handler) -> Handler:
        return _guarded(_with_generation_headers(handler), target=_path_object, is_read=True)

    def copy(handler: Handler) -> Handler:
        return _guarded(handler, target=_destination_object, source=_path_object)

    return {
        objects.get: read(objects.get),
        objects.download: read(objects.download),
        objects.insert: _guarded(_insert, target=_upload_object),
        objects.upload_partial: _guarded(objects.upload_partial, target=_upload_object),
        objects.delete: _guarded(objects.delete, target=_path_object),
        objects.patch: _guarded(objects.patch, target=_path_object),
        objects.compose: _guarded(objects.compose, target=_path_object),
        objects.copy: copy(objects.copy),
        objects.rewrite: copy(objects.rewrite),
        objects.ls: list_objects,
    }


def patched_routes() -> tuple[Route, ...]:
    """The emulator's routes with the GCS behaviours above; moveTo comes first because
    the generic object route would otherwise claim its URLs."""
    replacements = _replacements()
    original: tuple[Route, ...] = emulator_server.HANDLERS
    patched = [
        (
            pattern,
            {method: replacements.get(handler, handler) for method, handler in methods.items()},
        )
        for pattern, methods in original
    ]
    return (*_move_routes(), *patched)


def install() -> None:
    """Makes the emulator's router serve `patched_routes()` in this process."""
    emulator_server.HANDLERS = patched_routes()
