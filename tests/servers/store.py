"""One test's private corner of a shared test server: a unique prefix in its bucket.

Servers are started once per session (moto takes about a second to start); each test
gets a fresh prefix instead of a fresh server, and the prefix is emptied afterwards.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Protocol

import tensorstore as ts


class ObjectStoreServer(Protocol):
    """What `S3Server` and `GcsServer` have in common."""

    bucket: str

    @property
    def endpoint(self) -> str: ...

    @property
    def is_running(self) -> bool: ...

    def kvstore_spec(self, path: str = "") -> dict[str, Any]: ...

    def url(self, path: str = "") -> str: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...

    def create_bucket(self, name: str) -> None: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObjectStore:
    """Paths under `prefix` in `server`'s bucket; `path` arguments are relative to it.

    `restart()`, `stop()` and `start()` act on the whole shared server, which keeps
    acknowledged writes across them; other tests' data is never visible here.
    """

    server: ObjectStoreServer
    prefix: str
    own_bucket: str | None = None  # a bucket of its own instead of the server's shared one

    @classmethod
    def fresh(cls, server: ObjectStoreServer) -> ObjectStore:
        return cls(server=server, prefix=f"test-{uuid.uuid4().hex[:16]}")

    @classmethod
    def in_spare_bucket(cls, server: ObjectStoreServer, *, create: bool) -> ObjectStore:
        """A bucket never used before, for tests that need jaxpoint settings of their own.

        jaxpoint reads the endpoint from the environment when a bucket is first
        used in a process (retries come from StorageOptions). `create=False` leaves the bucket
        missing.
        """
        store = cls(server=server, prefix="", own_bucket=f"jaxpoint-spare-{uuid.uuid4().hex[:12]}")
        if create:
            server.create_bucket(store.bucket)
        return store

    @property
    def bucket(self) -> str:
        return self.own_bucket or self.server.bucket

    def _path(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def kvstore_spec(self, path: str = "") -> dict[str, Any]:
        """TensorStore kvstore spec whose keys start at `path` (add "/" for a folder)."""
        return {**self.server.kvstore_spec(self._path(path)), "bucket": self.bucket}

    def url(self, path: str = "") -> str:
        """``s3://bucket/<prefix>/<path>`` or ``gs://...``, for URL-taking APIs."""
        url = self.server.url(self._path(path))
        return url.replace(f"//{self.server.bucket}/", f"//{self.bucket}/", 1)

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server.restart()

    def clear(self) -> None:
        """Deletes everything under the prefix (or in its own bucket), starting the server
        first if a test stopped it."""
        self.server.start()
        kvstore = ts.KvStore.open(self.kvstore_spec()).result()
        kvstore.delete_range(ts.KvStore.KeyRange()).result()
