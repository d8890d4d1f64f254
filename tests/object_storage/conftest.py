"""Fixtures for checkpoints in real S3 (moto) and GCS (patched emulator) buckets.

The servers themselves are `tests/servers` (registered by the root conftest). jaxpoint
reaches them the way a user reaches any S3-compatible store or GCS:
- s3:// URLs: `AWS_ENDPOINT_URL` and `AWS_REGION`, read when a bucket is first used in
  the process; credentials from the `s3_server` fixture.
- gs:// URLs: `TENSORSTORE_GCS_HTTP_URL` and `GOOGLE_AUTH_TOKEN_FOR_TESTING`, set by the
  `gcs_server` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from jaxpoint.core.multihost.preemption import reset_preemption_handler
from servers.s3 import S3Server
from servers.store import ObjectStore


@pytest.fixture
def bucket(
    object_store: ObjectStore, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    """A fresh prefix on S3 and then on GCS; `bucket.url(path)` is what jaxpoint is given."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    return object_store


@pytest.fixture(autouse=True)
def clean_preemption_state() -> Iterator[None]:
    """Managers install a SIGTERM handler; each test starts and ends without one."""
    reset_preemption_handler()
    yield
    reset_preemption_handler()
