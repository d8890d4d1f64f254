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

import pytest

from servers.gcs import GcsServer
from servers.loopback import HOST
from servers.s3 import S3Server
from servers.store import ObjectStore


def _bypass_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """curl (inside TensorStore) honours http_proxy; loopback must never go through one."""
    for name in ("NO_PROXY", "no_proxy"):
        existing = os.environ.get(name)
        monkeypatch.setenv(
            name, f"{existing},{HOST},localhost" if existing else f"{HOST},localhost"
        )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto S3 for the session; sets AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        server = S3Server(workdir=tmp_path_factory.mktemp("s3-server"))
        for name, value in server.environ().items():
            monkeypatch.setenv(name, value)
        _bypass_proxies(monkeypatch)
        with server:
            yield server


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """GCS emulator for the session; sets TENSORSTORE_GCS_HTTP_URL and the test token."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        server = GcsServer(workdir=tmp_path_factory.mktemp("gcs-server"))
        for name, value in server.environ().items():
            monkeypatch.setenv(name, value)
        _bypass_proxies(monkeypatch)
        with server:
            yield server


@pytest.fixture
def s3_store(s3_server: S3Server) -> Iterator[ObjectStore]:
    store = ObjectStore.fresh(s3_server)
    yield store
    store.clear()


@pytest.fixture
def gcs_store(gcs_server: GcsServer) -> Iterator[ObjectStore]:
    store = ObjectStore.fresh(gcs_server)
    yield store
    store.clear()


@pytest.fixture(params=["s3", "gcs"])
def object_store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue(f"{request.param}_store")
