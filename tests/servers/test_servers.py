"""The loopback S3 and GCS servers behave like the real stores where commits depend on it.

Everything goes through real TensorStore against the real server processes; a test
that passed here against a server that ignored a precondition would be worthless
for commit-protocol tests, so each guarantee has a test that fails without it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import numpy as np
import pytest
import tensorstore as ts

from servers.gcs import GcsServer
from servers.loopback import HOST, HttpReply, http_request
from servers.process import ServerStartError
from servers.store import ObjectStore

# StorageGeneration::NoValue(): "the key must not exist", as TensorStore encodes it.
NO_VALUE = b"\x02"
# A failed conditional write returns this (unknown) generation instead of raising.
FAILED = b""

MIB = 1024 * 1024


def _open(store: ObjectStore, path: str = "") -> ts.KvStore:
    return ts.KvStore.open(store.kvstore_spec(path)).result()


def _ocdbt_spec(store: ObjectStore, path: str) -> dict[str, Any]:
    return {
        "driver": "ocdbt",
        "base": store.kvstore_spec(path),
        "config": {
            "max_inline_value_bytes": 1024,
            "max_decoded_node_bytes": 100_000_000,
            "manifest_kind": "single",
        },
        "assume_config": True,
        "target_data_file_size": 16 * MIB,
    }


def _zarr3_spec(kvstore: dict[str, Any], name: str, array: np.ndarray) -> dict[str, Any]:
    chunk_rows = max(1, array.shape[0] // 3)
    return {
        "driver": "zarr3",
        "kvstore": {**kvstore, "path": f"{name}/"},
        "metadata": {
            "shape": list(array.shape),
            "data_type": array.dtype.name,
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": [chunk_rows, *array.shape[1:]]},
            },
        },
    }


def _arrays() -> dict[str, np.ndarray]:
    """A small array and one whose data file is 3 MiB, well over curl's 1 MiB Expect limit."""
    rng = np.random.default_rng(seed=7)
    return {
        "small": rng.integers(-(2**31), 2**31 - 1, size=(5, 7), dtype=np.int32),
        "large": rng.standard_normal((768, 1024)).astype(np.float32),
    }


def _write_arrays(kvstore: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        spec = _zarr3_spec(kvstore, name, array)
        stored = ts.open(spec, create=True, delete_existing=True).result()
        stored.write(array).result()


def _assert_arrays_bit_exact(kvstore: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    for name, expected in arrays.items():
        stored = ts.open({"driver": "zarr3", "kvstore": {**kvstore, "path": f"{name}/"}}).result()
        actual = stored.read().result()
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, name
        assert actual.tobytes() == expected.tobytes(), f"{name} differs after the round trip"


@pytest.fixture
def neighbour(object_store: ObjectStore) -> Iterator[ObjectStore]:
    """Another test's prefix in the same bucket."""
    other = ObjectStore.fresh(object_store.server)
    yield other
    other.clear()


# --- plain kvstore operations -------------------------------------------------------


def test_write_read_list_delete_range(object_store: ObjectStore, neighbour: ObjectStore):
    kvstore = _open(object_store, "dir/")
    _open(neighbour, "dir/").write("a", b"neighbour").result()
    for key in ("a", "b/c", "b/d", "e"):
        kvstore.write(key, key.encode() * 3).result()

    assert kvstore.read("b/c").result().value == b"b/cb/cb/c"
    assert kvstore.read("missing").result().state == "missing"
    assert sorted(kvstore.list().result()) == [b"a", b"b/c", b"b/d", b"e"]
    assert sorted(kvstore.list(ts.KvStore.KeyRange("b/", "b0")).result()) == [b"b/c", b"b/d"]

    kvstore.delete_range(ts.KvStore.KeyRange("b/", "b0")).result()
    assert sorted(kvstore.list().result()) == [b"a", b"e"]
    assert _open(neighbour, "dir/").read("a").result().value == b"neighbour"


def test_byte_range_and_empty_values(object_store: ObjectStore):
    kvstore = _open(object_store)
    kvstore.write("digits", b"0123456789").result()
    kvstore.write("empty", b"").result()

    assert kvstore.read("digits", byte_range=slice(2, 5)).result().value == b"234"
    empty = kvstore.read("empty").result()
    assert (empty.state, empty.value) == ("value", b"")


# --- conditional operations ---------------------------------------------------------


def test_create_if_absent_fails_when_present(object_store: ObjectStore):
    kvstore = _open(object_store)
    assert kvstore.read("lock").result().stamp.generation == NO_VALUE

    assert kvstore.write("lock", b"first", if_equal=NO_VALUE).result().generation != FAILED
    assert kvstore.write("lock", b"second", if_equal=NO_VALUE).result().generation == FAILED
    assert kvstore.read("lock").result().value == b"first"


def test_compare_and_swap_rejects_a_stale_generation(object_store: ObjectStore):
    kvstore = _open(object_store)
    first = kvstore.write("manifest", b"v1").result().generation
    second = kvstore.write("manifest", b"v2", if_equal=first).result().generation
    assert second not in (FAILED, first)

    assert kvstore.write("manifest", b"lost", if_equal=first).result().generation == FAILED
    assert kvstore.read("manifest").result().value == b"v2"


def test_conditional_delete_and_conditional_read(object_store: ObjectStore):
    kvstore = _open(object_store)
    first = kvstore.write("k", b"v1").result().generation
    current = kvstore.write("k", b"v2").result().generation

    assert kvstore.write("k", None, if_equal=first).result().generation == FAILED
    unchanged = kvstore.read("k", if_not_equal=current).result()
    assert unchanged.state == "unspecified" and unchanged.stamp.generation == current
    assert kvstore.read("k", if_not_equal=first).result().value == b"v2"

    assert kvstore.write("k", None, if_equal=current).result().generation == NO_VALUE
    assert kvstore.read("k").result().state == "missing"


def test_racing_creates_have_exactly_one_winner(object_store: ObjectStore):
    kvstore = _open(object_store)
    values = [f"writer-{i}".encode() for i in range(16)]
    futures = [kvstore.write("commit", value, if_equal=NO_VALUE) for value in values]
    generations = [future.result().generation for future in futures]

    winners = [value for value, gen in zip(values, generations, strict=True) if gen != FAILED]
    assert len(winners) == 1, f"Expected one successful create, got {len(winners)}"
    assert kvstore.read("commit").result().value == winners[0]


# --- uploads over 1 MiB -------------------------------------------------------------


def _upload_head(store: ObjectStore, key: str, size: int) -> bytes:
    name = quote(f"{store.prefix}/{key}", safe="")
    if isinstance(store.server, GcsServer):
        target = f"POST /upload/storage/v1/b/{store.bucket}/o?uploadType=media&name={name}"
    else:
        target = f"PUT /{store.bucket}/{store.prefix}/{key}"
    return (
        f"{target} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {size}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()


def _read_status(reader: BinaryIO) -> bytes:
    """Reads one response head and returns its status line."""
    status = reader.readline()
    while reader.readline() not in (b"\r\n", b""):
        pass
    return status


def test_upload_answers_expect_100_continue(object_store: ObjectStore):
    body = os.urandom(2 * MIB)
    port = urlsplit(object_store.endpoint).port
    with socket.create_connection((HOST, port), timeout=0.5) as connection:
        reader = connection.makefile("rb")
        connection.sendall(_upload_head(object_store, "raw", len(body)))
        interim = _read_status(reader)  # times out (fails) if the server waits for the body
        connection.settimeout(10)
        connection.sendall(body)
        final = interim
        while final.startswith(b"HTTP/1.1 100"):  # werkzeug (moto) sends it twice
            final = _read_status(reader)

    assert interim.startswith(b"HTTP/1.1 100"), interim
    assert final.startswith(b"HTTP/1.1 200"), final
    assert _open(object_store).read("raw").result().value == body


def test_large_uploads_do_not_stall(object_store: ObjectStore):
    kvstore = _open(object_store)
    values = [os.urandom(2 * MIB) for _ in range(3)]
    started = time.monotonic()
    for index, value in enumerate(values):
        kvstore.write(f"big-{index}", value).result()
    elapsed_s = time.monotonic() - started

    # A server that never answers Expect: 100-continue costs curl 1 s per upload.
    assert elapsed_s < 2.5, f"3 uploads of 2 MiB took {elapsed_s:.2f} s"
    assert [kvstore.read(f"big-{i}").result().value for i in range(3)] == values


# --- OCDBT + zarr3 ------------------------------------------------------------------


def test_ocdbt_zarr3_round_trip_is_bit_exact(object_store: ObjectStore):
    arrays = _arrays()
    kvstore = _ocdbt_spec(object_store, "ckpt/")
    _write_arrays(kvstore, arrays)
    _assert_arrays_bit_exact(kvstore, arrays)

    files = _open(object_store, "ckpt/").list().result()
    assert b"manifest.ocdbt" in files
    assert any(name.startswith(b"d/") for name in files), files


# --- restarts -----------------------------------------------------------------------


def test_restart_keeps_acknowledged_writes_and_generations(object_store: ObjectStore):
    arrays = _arrays()
    kvstore_spec = _ocdbt_spec(object_store, "ckpt/")
    _write_arrays(kvstore_spec, arrays)
    kvstore = _open(object_store)
    generation = kvstore.write("marker", b"before").result().generation

    object_store.restart()

    assert kvstore.read("marker").result().stamp.generation == generation
    assert kvstore.write("marker", b"after", if_equal=generation).result().generation != FAILED
    _assert_arrays_bit_exact(kvstore_spec, arrays)


def test_write_during_an_outage_lands_after_restart(object_store: ObjectStore):
    kvstore = _open(object_store)
    object_store.stop()
    pending = kvstore.write("late", b"written while down", if_equal=NO_VALUE)
    time.sleep(0.2)
    object_store.start()

    # TensorStore retries refused connections with backoff until the server is back.
    assert pending.result(timeout=30).generation != FAILED
    assert kvstore.read("late").result().value == b"written while down"


# --- GCS-only API surface -----------------------------------------------------------


def _gcs_generation(number: int) -> bytes:
    """How TensorStore encodes a GCS generation number (StorageGeneration::FromUint64)."""
    return b"\x00" + number.to_bytes(8, "little")


def _gcs_object_url(store: ObjectStore, key: str, suffix: str = "") -> str:
    name = quote(f"{store.prefix}/{key}", safe="")
    return f"{store.endpoint}/storage/v1/b/{store.bucket}/o/{name}{suffix}"


def _gcs_move(store: ObjectStore, source: str, destination: str, query: str) -> HttpReply:
    destination_name = quote(f"{store.prefix}/{destination}", safe="")
    url = _gcs_object_url(store, source, f"/moveTo/o/{destination_name}?{query}")
    return http_request("POST", url)


def test_gcs_move_is_a_conditional_rename(gcs_store: ObjectStore):
    kvstore = _open(gcs_store)
    kvstore.write("tmp", b"payload").result()
    kvstore.write("taken", b"other").result()

    assert _gcs_move(gcs_store, "tmp", "taken", "ifGenerationMatch=0").status == 412
    moved = _gcs_move(gcs_store, "tmp", "final", "ifGenerationMatch=0")

    assert moved.status == 200, moved.body
    assert kvstore.read("taken").result().value == b"other"
    assert kvstore.read("tmp").result().state == "missing"
    final = kvstore.read("final").result()
    assert final.value == b"payload"
    assert final.stamp.generation == _gcs_generation(int(moved.json()["generation"]))


def test_gcs_list_pages_through_offsets(gcs_store: ObjectStore):
    kvstore = _open(gcs_store)
    for key in "abcde":
        kvstore.write(key, b"x").result()
    base = f"{gcs_store.endpoint}/storage/v1/b/{gcs_store.bucket}/o"
    start = quote(f"{gcs_store.prefix}/b", safe="")
    end = quote(f"{gcs_store.prefix}/e", safe="")
    names, token, pages = [], None, 0
    while True:
        pages += 1
        page = f"&pageToken={quote(token, safe='')}" if token else ""
        reply = http_request(
            "GET", f"{base}?startOffset={start}&endOffset={end}&maxResults=2{page}"
        ).json()
        names += [item["name"].rsplit("/", 1)[1] for item in reply["items"]]
        token = reply.get("nextPageToken")
        if token is None:
            break

    assert (names, pages) == (["b", "c", "d"], 2)


# --- server process errors ----------------------------------------------------------


def test_start_on_a_taken_port_names_the_server_and_shows_its_log(tmp_path: Path):
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        server = GcsServer(workdir=tmp_path, port=squatter.getsockname()[1])
        expected = r"(?s)GCS emulator .* exited with code 1.*Address already in use"
        with pytest.raises(ServerStartError, match=expected):
            server.start()
