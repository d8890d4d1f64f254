"""pytest fixtures: real S3 (moto) and GCS (patched emulator) servers on loopback.

Register with ``pytest_plugins = ["servers.fixtures"]`` in the root conftest.

- `s3_server`, `gcs_server` (session): one server each, started on first use. They
  set the environment TensorStore needs for the whole session (credentials, the GCS
  URL and test token), so request them before opening any s3/gcs kvstore.
- `s3_store`, `gcs_store` (function): an `ObjectStore`, a fresh prefix in the
  server's bucket, emptied after the test.
- `object_store` (function): `s3_store` and then `gcs_store`, for tests that must
  hold on both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TypeVar

import pytest

from servers.gcs import GcsServer
from servers.loopback import HOST
from servers.s3 import S3Server
from servers.store import ObjectStore, ObjectStoreServer

ServerT = TypeVar("ServerT", S3Server, GcsServer)


def _bypass_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """curl (inside TensorStore) honours http_proxy; loopback must never go through one."""
    for name in ("NO_PROXY", "no_proxy"):
        existing = os.environ.get(name)
        monkeypatch.setenv(
            name, f"{existing},{HOST},localhost" if existing else f"{HOST},localhost"
        )


def _running(server: ServerT) -> Iterator[ServerT]:
    """The session lifecycle of either server: its environment set, started, stopped."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in server.environ().items():
            monkeypatch.setenv(name, value)
        _bypass_proxies(monkeypatch)
        with server:
            yield server


def _fresh_store(server: ObjectStoreServer) -> Iterator[ObjectStore]:
    store = ObjectStore.fresh(server)
    yield store
    store.clear()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto S3 for the session; sets AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    yield from _running(S3Server(workdir=tmp_path_factory.mktemp("s3-server")))


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """GCS emulator for the session; sets TENSORSTORE_GCS_HTTP_URL and the test token."""
    yield from _running(GcsServer(workdir=tmp_path_factory.mktemp("gcs-server")))


@pytest.fixture
def s3_store(s3_server: S3Server) -> Iterator[ObjectStore]:
    yield from _fresh_store(s3_server)


@pytest.fixture
def gcs_store(gcs_server: GcsServer) -> Iterator[ObjectStore]:
    yield from _fresh_store(gcs_server)


@pytest.fixture(params=["s3", "gcs"])
def object_store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")
