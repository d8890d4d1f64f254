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


@dataclasses.dataclass(frozen=True, kw_only=True)
class ObjectStore:
    """Paths under `prefix` in `server`'s bucket; `path` arguments are relative to it.

    `restart()`, `stop()` and `start()` act on the whole shared server, which keeps
    acknowledged writes across them; other tests' data is never visible here.
    """

    server: ObjectStoreServer
    prefix: str

    @classmethod
    def fresh(cls, server: ObjectStoreServer) -> ObjectStore:
        return cls(server=server, prefix=f"test-{uuid.uuid4().hex[:16]}")

    @property
    def bucket(self) -> str:
        return self.server.bucket

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def kvstore_spec(self, path: str = "") -> dict[str, Any]:
        """TensorStore kvstore spec whose keys start at `path` (add "/" for a folder)."""
        return self.server.kvstore_spec(f"{self.prefix}/{path}")

    def url(self, path: str = "") -> str:
        """``s3://bucket/<prefix>/<path>`` or ``gs://...``, for URL-taking APIs."""
        return self.server.url(f"{self.prefix}/{path}")

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server.restart()

    def clear(self) -> None:
        """Deletes everything under the prefix, starting the server first if a test stopped it."""
        self.server.start()
        kvstore = ts.KvStore.open(self.kvstore_spec()).result()
        kvstore.delete_range(ts.KvStore.KeyRange()).result()
