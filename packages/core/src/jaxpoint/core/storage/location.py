"""`Location`: one folder or file on local disk, in a bucket or in memory.

Every path a user hands jaxpoint becomes a Location first, so the rest of the library
never parses URLs or branches on schemes. Names joined onto a location are checked so
that nothing saved can land outside the checkpoint folder.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from typing import Any

from jaxpoint.core.errors import InvalidArgumentError, InvalidNameError
from jaxpoint.core.storage.backend import Backend
from jaxpoint.core.storage.kvstore_backend import KvStoreBackend
from jaxpoint.core.storage.posix_backend import PosixBackend
from jaxpoint.core.storage.storage_options import StorageOptions

PathLike = "str | os.PathLike[str] | Location"
_OBJECT_SCHEMES = ("gs://", "s3://", "memory://")


def validate_name(name: str, *, what: str = "name") -> str:
    """Returns `name` if it is one safe path component; raises InvalidNameError otherwise."""
    if not isinstance(name, str):
        raise InvalidNameError(f"Expected the {what} to be a str, got {type(name).__name__} {name!r}.")
    problem = None
    if not name:
        problem = "it is empty"
    elif name in (".", ".."):
        problem = "it refers to a folder above or the folder itself"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator"
    elif "\x00" in name:
        problem = "it contains a NUL character"
    if problem:
        raise InvalidNameError(
            f"Expected the {what} to be a single path component, got {name!r}: {problem}, "
            "so it would escape or break the checkpoint folder. To fix, rename it "
            "(letters, digits, '_', '-', '.')."
        )
    return name


def _retry_limit(resource: str, retries: int | None) -> dict[str, Any]:
    """The TensorStore retry resource for `retries`, or {} for TensorStore's own (32)."""
    return {} if retries is None else {resource: {"max_retries": retries}}


# One backend per bucket and retry setting: a backend holds its open kvstore.
@functools.cache
def _object_backend(scheme: str, bucket: str, retries: int | None) -> KvStoreBackend:
    if scheme == "memory":
        return KvStoreBackend({"driver": "memory", "path": f"{bucket}/"}, url_prefix=f"memory://{bucket}/")
    if scheme == "gs":
        return KvStoreBackend({"driver": "gcs", "bucket": bucket,
                               **_retry_limit("gcs_request_retries", retries)},
                              url_prefix=f"gs://{bucket}/")
    spec: dict[str, Any] = {"driver": "s3", "bucket": bucket,
                            **_retry_limit("s3_request_retries", retries)}
    # TensorStore ignores AWS_ENDPOINT_URL; honour it here so S3-compatible stores work.
    if endpoint := os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"):
        spec["endpoint"] = endpoint
        # TensorStore only sends If-Match/If-None-Match to amazonaws.com unless told to;
        # without them, two writers can both "create" the same OCDBT manifest.
        spec["use_conditional_write"] = True
    if region := os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        spec["aws_region"] = region
    return KvStoreBackend(spec, url_prefix=f"s3://{bucket}/")


_POSIX = {fsync: PosixBackend(fsync=fsync) for fsync in (True, False)}


@dataclasses.dataclass(frozen=True)
class Location:
    """A path inside one storage backend, with the `StorageOptions` its reads and writes
    use. Build one with `Location.parse`."""

    backend: Backend = dataclasses.field(compare=False, repr=False)
    prefix: str  # "" for local disk, "gs://bucket/" etc. for object stores
    path: str  # absolute local path, or the key path inside the bucket
    options: StorageOptions = dataclasses.field(default_factory=StorageOptions, compare=False,
                                                repr=False)

    @classmethod
    def parse(cls, where: str | os.PathLike[str] | Location, *,
              options: StorageOptions | None = None) -> Location:
        """Parses a local path (relative ones too), gs://, s3:// or memory:// URL.

        `options`: how to read and write there (default: a Location keeps its own, a path
        gets `StorageOptions()`).
        """
        if options is not None and not isinstance(options, StorageOptions):
            raise InvalidArgumentError(
                f"Expected options to be a StorageOptions or None, got "
                f"{type(options).__name__}. To fix, pass StorageOptions(...)."
            )
        if isinstance(where, Location):
            if options is None or options == where.options:
                return where
            return cls._parse(str(where), options)
        return cls._parse(where, options if options is not None else StorageOptions())

    @classmethod
    def _parse(cls, where: str | os.PathLike[str], options: StorageOptions) -> Location:
        text = os.fspath(where) if not isinstance(where, str) else where
        if not isinstance(text, str) or not text:
            raise InvalidNameError(f"Expected a non-empty path or URL, got {where!r}.")
        for scheme_sep in _OBJECT_SCHEMES:
            if text.startswith(scheme_sep):
                scheme = scheme_sep[:-3]
                bucket, _, key = text[len(scheme_sep):].partition("/")
                if not bucket:
                    raise InvalidNameError(
                        f"Expected {scheme_sep}BUCKET/PATH, got {text!r}. To fix, name the bucket."
                    )
                parts = [p for p in key.split("/") if p]
                for part in parts:
                    validate_name(part, what=f"path component of {text!r}")
                retries = options.object_store_max_retries if scheme != "memory" else None
                return cls(_object_backend(scheme, bucket, retries), f"{scheme_sep}{bucket}/",
                           "/".join(parts), options)
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
            raise InvalidNameError(
                f"Unsupported storage URL {text!r}. Expected a local path, gs://, s3:// or "
                "memory://."
            )
        return cls(_POSIX[options.fsync], "", os.path.abspath(os.path.expanduser(text)), options)

    @property
    def is_local(self) -> bool:
        return not self.prefix

    @property
    def has_atomic_rename(self) -> bool:
        return self.backend.has_atomic_rename

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        head = self.path.rstrip("/").rsplit("/", 1)[0]
        if self.is_local and not head:
            head = "/"
        return dataclasses.replace(self, path=head if head != self.path else "")

    def __truediv__(self, name: str) -> Location:
        validate_name(name)
        joined = f"{self.path.rstrip('/')}/{name}" if self.path else name
        return dataclasses.replace(self, path=joined)

    def __str__(self) -> str:
        return f"{self.prefix}{self.path}"

    def __fspath__(self) -> str:
        return str(self)

    def kvstore_spec(self) -> dict[str, Any]:
        return self.backend.kvstore_spec(self.path)

    def exists(self) -> bool:
        return self.backend.exists(self.path)

    def is_file(self) -> bool:
        return self.backend.is_file(self.path)

    def list_names(self) -> list[str]:
        return self.backend.list_names(self.path)

    def read_bytes(self) -> bytes:
        return self.backend.read_bytes(self.path)

    def size(self) -> int | None:
        """Bytes in this file when the storage knows it without reading it, else None."""
        return self.backend.size(self.path)

    def write_bytes(self, data: bytes) -> None:
        self.backend.write_bytes(self.path, data)

    def write_bytes_if_absent(self, data: bytes) -> bool:
        """Writes this file only if it does not exist; False, writing nothing, if it did."""
        return self.backend.write_bytes_if_absent(self.path, data)

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_json(self, value: Any) -> None:
        self.write_text(json.dumps(value, sort_keys=False, separators=(",", ":")))

    def make_folder(self) -> None:
        self.backend.make_folder(self.path)

    def remove_abandoned_writes(self) -> None:
        """Removes the files in this folder that writers died while writing."""
        self.backend.remove_abandoned_writes(self.path)

    def remove(self) -> None:
        self.backend.remove(self.path)

    def rename_to(self, target: Location) -> None:
        self.backend.rename(self.path, target.path)

    def exchange_with(self, other: Location) -> bool:
        """Swaps this folder and `other` atomically; False where the storage cannot."""
        return self.backend.exchange(self.path, other.path)
