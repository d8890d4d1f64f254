"""Read leases: a process reading a step keeps managers in other processes from deleting it.

Files under `<root>/_READ_LEASES/` (a name no step format parses, and one Orbax ignores):
  `<step name>.<holder>.lease`  a reader holds the step until the lease's `expires_at`;
                                the holder renews it while reading, so a killed reader's
                                lease simply runs out (sooner on the same host: a lease of
                                a process that no longer exists is ignored at once).
  `<step name>.deleting`        a manager is deleting the step.
Mutual exclusion without a lock server, as in Dekker's algorithm: each side writes its own
file first and only then looks for the other's. Whichever looks second sees the other's
file, so a step is never deleted while a reader that got it holds a lease. If both see
each other, both back off: the reader skips the step, the manager deletes it later.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import threading
import time
import uuid

from jaxpoint.core.errors import CorruptCheckpointError, StorageError
from jaxpoint.core.storage import Location

logger = logging.getLogger(__name__)

LEASE_FOLDER = "_READ_LEASES"
DEFAULT_LEASE_TTL_S = 300.0
# A deletion marker older than this belongs to a manager that died mid-deletion.
DELETION_MARKER_TTL_S = 3600.0
_LEASE_SUFFIX = ".lease"
_DELETING_SUFFIX = ".deleting"
_HOST = socket.gethostname()


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeaseRecord:
    """The content of a lease or deletion-marker file."""

    host: str
    pid: int
    expires_at: float

    def is_live(self, now: float) -> bool:
        if now >= self.expires_at:
            return False
        return self.host != _HOST or _process_exists(self.pid)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _record(expires_at: float) -> dict[str, object]:
    return {"host": _HOST, "pid": os.getpid(), "expires_at": expires_at}


def _read_record(location: Location) -> LeaseRecord | None:
    try:
        raw = json.loads(location.read_bytes())
        return LeaseRecord(host=str(raw["host"]), pid=int(raw["pid"]),
                           expires_at=float(raw["expires_at"]))
    except FileNotFoundError:
        return None  # released between listing and reading
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptCheckpointError(
            f"Expected a JSON lease record with host, pid and expires_at at {location}, found "
            f"something else ({error}). To fix, remove the file; the reader will take a new "
            "lease."
        ) from error


def live_lease_holders(root: Location, step_name: str) -> list[str]:
    """The holders of unexpired read leases on `step_name`."""
    folder = root / LEASE_FOLDER
    now = time.time()
    holders = []
    for name in folder.list_names():
        if name.startswith(f"{step_name}.") and name.endswith(_LEASE_SUFFIX):
            try:
                record = _read_record(folder / name)
            except CorruptCheckpointError as error:  # not ours: leases are written whole
                logger.warning("Ignoring an unreadable read lease: %s", error)
                continue
            if record is not None and record.is_live(now):
                holders.append(name[len(step_name) + 1:-len(_LEASE_SUFFIX)])
    return holders


def _deletion_marker(root: Location, step_name: str) -> Location:
    return root / LEASE_FOLDER / f"{step_name}{_DELETING_SUFFIX}"


def begin_deletion(root: Location, step_name: str) -> bool:
    """Marks `step_name` as being deleted; False (and no marker) when a reader holds it."""
    (root / LEASE_FOLDER).make_folder()
    marker = _deletion_marker(root, step_name)
    marker.write_json(_record(time.time() + DELETION_MARKER_TTL_S))
    holders = live_lease_holders(root, step_name)
    if holders:
        marker.remove()
        logger.info("Step %s under %s is being read by %s; deleting it later.", step_name,
                    root, holders)
        return False
    return True


def end_deletion(root: Location, step_name: str) -> None:
    """Removes the deletion marker once the step is gone."""
    _deletion_marker(root, step_name).remove()


def is_being_deleted(root: Location, step_name: str) -> bool:
    record = _read_record(_deletion_marker(root, step_name))
    return record is not None and record.is_live(time.time())


def remove_expired(root: Location) -> None:
    """Removes leases and deletion markers whose holders are gone (primary, at start-up)."""
    folder = root / LEASE_FOLDER
    folder.remove_abandoned_writes()
    now = time.time()
    for name in folder.list_names():
        if not name.endswith((_LEASE_SUFFIX, _DELETING_SUFFIX)):
            continue
        try:
            record = _read_record(folder / name)
        except CorruptCheckpointError:
            record = None
        if record is None or not record.is_live(now):
            (folder / name).remove()


class ReadLease:
    """Holds `step_name` under `root` against deletion until `release()`.

    `acquire()` returns False when a manager is already deleting the step. While held, a
    daemon thread renews the lease every third of `ttl_s`, so a reader that dies stops
    protecting the step after at most `ttl_s`.
    """

    def __init__(self, root: Location, step_name: str, *, ttl_s: float = DEFAULT_LEASE_TTL_S):
        holder = re.sub(r"[^A-Za-z0-9-]", "-", f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self._file = root / LEASE_FOLDER / f"{step_name}.{holder}{_LEASE_SUFFIX}"
        self._root, self._step_name, self._ttl_s = root, step_name, ttl_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        self._file.write_json(_record(time.time() + self._ttl_s))

    def acquire(self) -> bool:
        (self._root / LEASE_FOLDER).make_folder()
        self._write()
        if is_being_deleted(self._root, self._step_name):
            self._file.remove()
            return False
        self._thread = threading.Thread(target=self._renew, daemon=True,
                                        name=f"jaxpoint-lease:{self._step_name}")
        self._thread.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(self._ttl_s / 3):
            try:
                self._write()
            except StorageError as error:  # the next renewal may succeed
                logger.warning("Could not renew the read lease %s: %s", self._file, error)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._file.remove()
