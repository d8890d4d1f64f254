"""Local (POSIX) storage: folders, fsync'd files and atomic rename."""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
from typing import Any

from jaxpoint.core.errors import StorageError


def storage_error(error: OSError, action: str, path: str) -> StorageError:
    """Turns an OSError into a StorageError that says what failed and how to fix it."""
    reading = action.startswith(("read", "look up", "list"))
    access = ("Grant read access (or run as a user who has it)" if reading
              else "Grant write access or choose another directory")
    hints: dict[int | None, str] = {
        errno.ENOSPC: "The disk is full. Free space there (or save elsewhere) and retry.",
        errno.EDQUOT: "The disk quota is exhausted. Free space there and retry.",
        errno.EACCES: f"{access}.",
        errno.EPERM: f"{access}.",
        errno.EROFS: "The file system is read-only. Choose a writable directory.",
        errno.ENOTDIR: "A parent of this path is a file, not a folder. Remove it or choose another path.",
    }
    hint = hints.get(error.errno, "Check that the location exists and is writable.")
    wrapped = StorageError(f"Could not {action} {path}: {error.strerror or error}. {hint}")
    wrapped.errno = error.errno
    return wrapped


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
# Errors of renameat2(flags) that mean "this system or file system cannot".
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)


@functools.cache
def _renameat2() -> Any:
    """libc's renameat2, or None: Python's os module has no atomic exchange of two paths."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:
        return None


def _rename_without_replacing(source: str, target: str) -> bool:
    """renameat2(RENAME_NOREPLACE); False, changing nothing, where it is unsupported."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target),
                 _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), source, None, target)


_PARTIAL_WRITE = re.compile(r"\.partial-(\d+)$")


def process_exists(pid: int) -> bool:
    """Whether process `pid` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def fsync_folder(path: str) -> None:
    """Makes a folder's entries (new files, renames) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PosixBackend:
    """Local disk; commits by renaming a finished tmp folder into place.

    `fsync=False` skips flushing files and folders to the disk: a commit is still atomic
    for every process, but a machine crash may lose or truncate what it wrote.
    """

    has_atomic_rename = True

    def __init__(self, *, fsync: bool = True) -> None:
        self.fsync = fsync

    def _sync_file(self, f: Any) -> None:
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())

    def _sync_folder_of(self, path: str) -> None:
        if self.fsync:
            fsync_folder(os.path.dirname(path) or ".")

    def kvstore_spec(self, path: str) -> dict[str, Any]:
        return {"driver": "file", "path": path.rstrip("/") + "/"}

    def exists(self, path: str) -> bool:
        # Not os.path.exists: it answers False for a folder it may not search, which
        # would report "no checkpoint" where the truth is "permission denied".
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as error:
            raise storage_error(error, "look up", path) from error
        return True

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def list_names(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read_bytes(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise
        except OSError as error:
            raise storage_error(error, "read", path) from error

    def size(self, path: str) -> int | None:
        try:
            return os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            raise
        except OSError as error:
            raise storage_error(error, "look up", path) from error

    def write_bytes(self, path: str, data: bytes) -> None:
        partial = f"{path}.partial-{os.getpid()}"
        try:
            with open(partial, "wb") as f:
                f.write(data)
                self._sync_file(f)
            os.replace(partial, path)
        except OSError as error:
            if os.path.exists(partial):
                os.remove(partial)
            raise storage_error(error, "write", path) from error

    def write_bytes_if_absent(self, path: str, data: bytes) -> bool:
        """Writes the file `path` durably unless it exists; False (nothing written) if it did."""
        partial = f"{path}.partial-{os.getpid()}"
        try:
            with open(partial, "wb") as f:
                f.write(data)
                self._sync_file(f)
            try:
                os.link(partial, path)  # fails with EEXIST, never replaces
            except FileExistsError:
                return False
            finally:
                os.remove(partial)
        except OSError as error:
            if os.path.exists(partial):
                os.remove(partial)
            raise storage_error(error, "write", path) from error
        return True

    def make_folder(self, path: str) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except FileExistsError as error:
            raise StorageError(
                f"Expected a folder at {path}, found a file. Remove the file or choose "
                "another directory."
            ) from error
        except OSError as error:
            raise storage_error(error, "create the folder", path) from error

    def remove_abandoned_writes(self, path: str) -> None:
        """Removes `<name>.partial-<pid>` files (see write_bytes) of processes that are gone.

        Only for writers on this host: the pid of another host's writer means nothing here.
        """
        for name in self.list_names(path):
            match = _PARTIAL_WRITE.search(name)
            if match and not process_exists(int(match.group(1))):
                self.remove(os.path.join(path, name))

    def remove(self, path: str) -> None:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        except OSError as error:
            raise storage_error(error, "remove", path) from error

    def rename(self, source: str, target: str) -> None:
        """Renames a folder onto a path where nothing is, never replacing what is there.

        Linux: renameat2(RENAME_NOREPLACE) (ext4, xfs, btrfs, tmpfs, overlayfs...), which
        fails with EEXIST if `target` exists at all. Elsewhere (other kernels, NFS, most
        FUSE file systems) rename(2), which fails with ENOTEMPTY/EEXIST onto a non-empty
        folder, so a committed checkpoint (it holds its marker) is never replaced; only
        an empty folder in the way would be. The StorageError raised keeps the `errno`.
        """
        try:
            if not _rename_without_replacing(source, target):
                os.rename(source, target)
            self._sync_folder_of(target)
        except OSError as error:
            raise storage_error(error, f"rename {source} to", target) from error

    def exchange(self, source: str, target: str) -> bool:
        """Swaps two existing folders in one step (Linux renameat2 with RENAME_EXCHANGE).

        False, changing nothing, where the kernel, libc or file system cannot.
        """
        renameat2 = _renameat2()
        if renameat2 is None:
            return False
        if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target),
                     _RENAME_EXCHANGE) != 0:
            code = ctypes.get_errno()
            if code in _UNSUPPORTED:
                return False
            error = OSError(code, os.strerror(code))
            raise storage_error(error, f"exchange {source} with", target) from error
        try:
            self._sync_folder_of(target)
        except OSError as error:
            raise storage_error(error, "sync the folder of", target) from error
        return True
