"""Object stores (gs://, s3://) and the in-memory store, all through TensorStore kvstores.

Object stores have no folders and no atomic rename: a folder exists when a key lies
below it, and a checkpoint commits by writing its marker file last.
"""

from __future__ import annotations

from typing import Any

import tensorstore as ts
from jaxpoint.core.errors import StorageError
from jaxpoint.core.storage.context import shared_context


class KvStoreBackend:
    """A bucket (or the memory store) as a TensorStore kvstore rooted at `root_spec`."""

    has_atomic_rename = False

    def __init__(self, root_spec: dict[str, Any], *, url_prefix: str) -> None:
        self._root_spec = dict(root_spec)
        self._url_prefix = url_prefix
        self._store: ts.KvStore | None = None

    def _kvstore(self) -> ts.KvStore:
        if self._store is None:
            self._store = ts.KvStore.open(self._root_spec, context=shared_context()).result()
        return self._store

    def _key(self, path: str) -> str:
        return path.strip("/")

    def _describe(self, path: str) -> str:
        return self._url_prefix + self._key(path)

    def _run(self, action: str, path: str, future: Any) -> Any:
        try:
            return future.result()
        except Exception as error:  # TensorStore raises ValueError/OSError subclasses.
            raise StorageError(
                f"Could not {action} {self._describe(path)}: {error}. Check that the bucket "
                "exists, the credentials allow it and the server is reachable."
            ) from error

    def kvstore_spec(self, path: str) -> dict[str, Any]:
        spec = dict(self._root_spec)
        base = spec.get("path", "")
        key = self._key(path)
        spec["path"] = f"{base}{key}/" if key else base
        return spec

    def exists(self, path: str) -> bool:
        return self.is_file(path) or bool(self._list_keys(path, limit_one=True))

    def is_file(self, path: str) -> bool:
        key = self._key(path)
        if not key:
            return False
        result = self._run("read", path, self._kvstore().read(key.encode()))
        return result.state == "value"

    def _list_keys(self, path: str, *, limit_one: bool = False) -> list[bytes]:
        key = self._key(path)
        prefix = f"{key}/" if key else ""
        key_range = ts.KvStore.KeyRange(prefix.encode(), _prefix_end(prefix.encode()))
        keys = self._run("list", path, self._kvstore().list(key_range))
        return keys[:1] if limit_one else keys

    def list_names(self, path: str) -> list[str]:
        key = self._key(path)
        strip = len(key) + 1 if key else 0
        names = {k[strip:].decode().split("/", 1)[0] for k in self._list_keys(path)}
        return sorted(names)

    def read_bytes(self, path: str) -> bytes:
        result = self._run("read", path, self._kvstore().read(self._key(path).encode()))
        if result.state != "value":
            raise FileNotFoundError(self._describe(path))
        return bytes(result.value)

    def size(self, path: str) -> int | None:
        return None  # a kvstore read fetches the whole object: no cheaper size to be had

    def write_bytes(self, path: str, data: bytes) -> None:
        self._run("write", path, self._kvstore().write(self._key(path).encode(), data))

    def write_bytes_if_absent(self, path: str, data: bytes) -> bool:
        """A conditional write (GCS `ifGenerationMatch=0`, S3 `If-None-Match: *`).

        On S3 TensorStore sends the condition to amazonaws.com, and elsewhere only with
        `use_conditional_write` (set by Location for custom endpoints); a server that
        ignores it makes this an ordinary write.
        """
        stamp = self._run("write", path, self._kvstore().write(
            self._key(path).encode(), data, if_equal=_NO_VALUE))
        return bool(stamp.generation)

    def make_folder(self, path: str) -> None:
        if self.is_file(path):
            raise StorageError(
                f"Expected a folder at {self._describe(path)}, found an object. Remove it "
                "or choose another directory."
            )

    def remove_abandoned_writes(self, path: str) -> None:
        """Nothing to do: an object appears whole or not at all."""

    def remove(self, path: str) -> None:
        key = self._key(path)
        store = self._kvstore()
        if key:
            self._run("delete", path, store.delete_range(
                ts.KvStore.KeyRange(key.encode(), key.encode() + b"\x00")))
        prefix = f"{key}/".encode() if key else b""
        self._run("delete", path, store.delete_range(
            ts.KvStore.KeyRange(prefix, _prefix_end(prefix))))

    def rename(self, source: str, target: str) -> None:
        raise StorageError(
            f"{self._url_prefix} has no atomic rename; jaxpoint commits there with a marker "
            "file instead. This is a bug in the caller."
        )

    def exchange(self, source: str, target: str) -> bool:
        self.rename(source, target)  # raises: object stores commit with a marker
        return False


# TensorStore's generation of a missing key; a write conditioned on it creates only.
# A failed condition resolves to the empty ("unknown") generation.
_NO_VALUE = b"\x02"


def _prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key that starts with `prefix`."""
    if not prefix:
        return b""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b""
    return stripped[:-1] + bytes([stripped[-1] + 1])
