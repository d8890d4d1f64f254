"""The seam between jaxpoint's path operations and a kind of storage.

A backend knows how to list, read, write and delete under its URLs, which TensorStore
kvstore spec reaches a location, and what it can do atomically. The commit protocol is
chosen from `has_atomic_rename`, never from the look of a path.
"""

from __future__ import annotations

from typing import Any, Protocol


class Backend(Protocol):
    """Storage operations on `/`-separated paths inside one root (disk, bucket, memory)."""

    has_atomic_rename: bool

    def kvstore_spec(self, path: str) -> dict[str, Any]:
        """TensorStore kvstore spec of the folder `path` (ends with `/`)."""

    def exists(self, path: str) -> bool:
        """True if `path` is a file or a non-empty folder."""

    def is_file(self, path: str) -> bool:
        """True if `path` is a file."""

    def list_names(self, path: str) -> list[str]:
        """Immediate children of the folder `path`, sorted; [] if it does not exist."""

    def read_bytes(self, path: str) -> bytes:
        """Contents of the file `path`; FileNotFoundError if absent, StorageError if unreadable."""

    def size(self, path: str) -> int | None:
        """Bytes in the file `path` when known without reading it, else None.

        Lets readers refuse a huge file before loading it. Where the size is known,
        FileNotFoundError if absent; where it is not, absence shows on `read_bytes`.
        """

    def write_bytes(self, path: str, data: bytes) -> None:
        """Writes the file `path` durably, replacing it whole or not at all."""

    def write_bytes_if_absent(self, path: str, data: bytes) -> bool:
        """Like `write_bytes`, but only if `path` does not exist; False if it did."""

    def make_folder(self, path: str) -> None:
        """Creates the folder `path` and its parents (a no-op on object stores)."""

    def remove_abandoned_writes(self, path: str) -> None:
        """Removes the half-written files of dead writers directly in the folder `path`."""

    def remove(self, path: str) -> None:
        """Removes the file or folder `path` and everything below it."""

    def rename(self, source: str, target: str) -> None:
        """Atomically renames a folder, never replacing a non-empty one at `target`; only
        where `has_atomic_rename`. Failures are StorageErrors carrying the `errno`."""

    def exchange(self, source: str, target: str) -> bool:
        """Atomically swaps two existing folders; only where `has_atomic_rename`.

        Returns False, changing nothing, where the storage cannot swap in one step.
        """
