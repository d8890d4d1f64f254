"""Page-cache control: cold reads and durable writes measured the same way for everyone."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

# Parallel reads roughly double cold throughput on this VM's virtual disk (queue depth).
IO_THREADS = 8
_READ_CHUNK = 8 * 2**20


def files_under(directories: Iterable[str]) -> list[str]:
    paths = []
    for directory in directories:
        for root, _, names in os.walk(directory):
            paths.extend(os.path.join(root, name) for name in sorted(names))
    return paths


def drop(directories: Iterable[str] = ()) -> str:
    """Flush dirty pages and evict cached pages; returns the method that worked.

    `drop_caches` empties the whole page cache but needs root; otherwise every file under
    `directories` is evicted with POSIX_FADV_DONTNEED (enough for a cold read of them).
    """
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("3")
        return "drop_caches"
    except OSError:
        pass
    for path in files_under(directories):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "fadvise"


def warm(directories: Iterable[str]) -> int:
    """Read every file under `directories` once so that it sits in the page cache."""
    return read_all(files_under(directories))


def read_all(paths: Iterable[str]) -> int:
    """Read `paths` with IO_THREADS threads into reused buffers; returns the bytes read.

    The cost of the disk or the page cache alone: no allocation, no parsing.
    """
    local = threading.local()

    def read(path: str) -> int:
        if not hasattr(local, "view"):
            local.view = memoryview(bytearray(_READ_CHUNK))
        total = 0
        with open(path, "rb", buffering=0) as file:
            while count := file.readinto(local.view):
                total += count
        return total

    with ThreadPoolExecutor(IO_THREADS) as pool:
        return sum(pool.map(read, paths))


def fsync_tree(directory: str) -> float:
    """fsync every file and directory under `directory`; returns the seconds it took.

    Applied after every library save so that "durable" means the same for all of them
    (cheap where the library already synced its files).
    """
    start = time.perf_counter()
    for root, dirs, names in os.walk(directory):
        for name in names:
            _fsync_path(os.path.join(root, name), os.O_RDONLY)
        for name in dirs:
            _fsync_path(os.path.join(root, name), os.O_RDONLY | os.O_DIRECTORY)
    _fsync_path(directory, os.O_RDONLY | os.O_DIRECTORY)
    _fsync_path(os.path.dirname(os.path.abspath(directory)), os.O_RDONLY | os.O_DIRECTORY)
    return time.perf_counter() - start


def _fsync_path(path: str, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
