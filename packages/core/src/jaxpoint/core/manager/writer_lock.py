"""The writer lock: one process writes a checkpoint directory at a time.

A writing manager's primary process holds `<root>/_WRITER_LOCK` (a name no step format
parses, and one Orbax ignores) from construction to `close()`:
  - local disk: an exclusive `flock` on the file, which the kernel releases when the
    holder exits or is killed, so a crashed writer never blocks its replacement. The file
    records the holder's host, pid and start time so that the error can name it. It is
    never removed: removing a lock file races with the next writer opening it.
  - object stores have no locks: the record is written at start and removed at close; a
    record left by another process is reported as a warning only, because a killed
    writer's record cannot be told from a live one's.
Managers of one directory in the same process share the lock. File systems that refuse
`flock` (some FUSE and old NFS mounts) and read-only ones get no lock, with a log line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time

from jaxpoint.core.errors import (
    CheckpointExistsError,
    DirectoryInUseError,
    StepAlreadyExistsError,
)
from jaxpoint.core.storage import Location

logger = logging.getLogger(__name__)

WRITER_LOCK_FILE = "_WRITER_LOCK"
_NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.EROFS,
               errno.EACCES, errno.EPERM)

_lock = threading.Lock()
_held: dict[str, list[int]] = {}  # lock file path -> [fd, number of managers sharing it]


def _record() -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()


def _describe(raw: bytes) -> str:
    try:
        record = json.loads(raw)
        return f"process {record['pid']} on host {record['host']} (since {record['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process (its record is unreadable)"


def _conflict(root: Location, holder: str) -> DirectoryInUseError:
    return DirectoryInUseError(
        f"Expected no other writer of {root}, found {holder} holding {WRITER_LOCK_FILE}. Two "
        "writers of one directory race each other's saves and deletions. To fix, stop the "
        "other job (a preempted job may still be saving), open this manager with "
        "read_only=True to only read, or pass allow_concurrent_writers=True if several "
        "writers are deliberate."
    )


class WriterLock:
    """Held by a writing manager's primary process; `acquire()` raises DirectoryInUseError."""

    def __init__(self, root: Location) -> None:
        self._root = root
        self._file = root / WRITER_LOCK_FILE
        self._is_held = False

    def acquire(self) -> None:
        key = str(self._file)
        with _lock:
            if key in _held:
                _held[key][1] += 1
                self._is_held = True
                return
            fd = self._lock_file() if self._root.is_local else self._write_record()
            if fd is not None:
                _held[key] = [fd, 1]
                self._is_held = True

    def _lock_file(self) -> int | None:
        """The locked descriptor; None where the file system cannot lock."""
        try:
            fd = os.open(self._file.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            self._unlockable(error)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise _conflict(self._root, holder) from None
        except OSError as error:
            os.close(fd)
            self._unlockable(error)
            return None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _record(), 0)
        return fd

    def _unlockable(self, error: OSError) -> None:
        if error.errno not in _NO_LOCKING:
            raise error
        logger.info("Not locking %s against other writers: %s.", self._root, error.strerror)

    def _write_record(self) -> int:
        try:
            raw = self._file.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is not None:
            logger.warning(
                "%s records another writer of %s: %s. If it is still running, stop it: two "
                "writers of one directory race each other's saves and deletions. If it was "
                "killed, ignore this.", WRITER_LOCK_FILE, self._root, _describe(raw))
        self._file.write_bytes(_record())
        return -1  # no descriptor: the record is the whole lease

    def release(self) -> None:
        if not self._is_held:
            return
        self._is_held = False
        key = str(self._file)
        with _lock:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[key]
            if entry[0] >= 0:
                os.close(entry[0])  # releases the flock
            else:
                self._file.remove()


def lost_race_error(step: int, folder: Location) -> StepAlreadyExistsError:
    """What a writer that lost the commit of `step` to another writer raises."""
    return StepAlreadyExistsError(
        f"Step {step} was committed at {folder} by another writer while this manager was "
        f"saving it, so this save was discarded and theirs kept. To fix, make sure "
        "one job writes this directory (a preempted job may still be running), or save "
        "another step."
    )


def commit_conflict(error: BaseException) -> CheckpointExistsError | None:
    """The CheckpointExistsError a background failure wraps, if that is what it was."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, CheckpointExistsError):
        seen = seen.__cause__
    return seen
