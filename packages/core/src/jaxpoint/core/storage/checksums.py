"""`_CHECKSUMS`: a SHA-256 digest of every checkpoint file that carries no checksum of its own.

Array chunks carry zarr3's crc32c, and OCDBT manifests and B-tree nodes their own
CRC-32C. JSON metadata (`_METADATA`, `_sharding`, `_strings.json`, `_CHECKPOINT_METADATA`,
JSON items) and legacy zarr2 files carry none, so a flipped digit that leaves valid JSON
(in a string leaf, a JSON item, a shape) would restore silently wrong. The primary writes
this file just before the commit; restore and `verify` check it. Orbax ignores it, and
checkpoints without it (orbax's, older ones) are read as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from jaxpoint.core.errors import CorruptCheckpointError, InvalidNameError
from jaxpoint.core.storage.array_format import OCDBT_MANIFEST, PROCESS_DB_PREFIX
from jaxpoint.core.storage.commit import COMMIT_MARKER
from jaxpoint.core.storage.json_file import read_json
from jaxpoint.core.storage.location import Location, validate_name

CHECKSUM_FILE = "_CHECKSUMS"
ALGORITHM = "sha256"
# Inside OCDBT databases every byte is covered by OCDBT's or zarr3's own checksums.
_OCDBT_DATA_FOLDER = "d"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _covered(folder: Location, prefix: str = "") -> Iterator[tuple[str, Location]]:
    """(relative path, location) of every file that needs a digest, depth first."""
    for name in folder.list_names():
        if name in (COMMIT_MARKER, CHECKSUM_FILE, OCDBT_MANIFEST) or name.startswith(PROCESS_DB_PREFIX):
            continue
        child = folder / name
        # Listing first: on object stores `is_file` costs a whole read.
        if child.list_names():
            if name != _OCDBT_DATA_FOLDER:
                yield from _covered(child, f"{prefix}{name}/")
        elif child.is_file():
            yield f"{prefix}{name}", child


def write_checksums(folder: Location) -> None:
    """Records the digest of every covered file under `folder` (primary, before commit)."""
    files = {relative: _digest(location.read_bytes()) for relative, location in _covered(folder)}
    (folder / CHECKSUM_FILE).write_json({"algorithm": ALGORITHM, "files": files})


def check_checksums(folder: Location) -> int | None:
    """Checks every file `_CHECKSUMS` lists; returns how many, or None without the file.

    Raises CorruptCheckpointError naming the first file that is missing or differs.
    """
    location = folder / CHECKSUM_FILE
    if not location.exists():
        return None
    recorded = read_json(location)
    files = recorded.get("files")
    if recorded.get("algorithm") != ALGORITHM or not isinstance(files, dict):
        raise CorruptCheckpointError(
            f"Expected {location} to hold {{'algorithm': {ALGORITHM!r}, 'files': {{...}}}}, got "
            f"{recorded!r:.200}. The file is corrupt; restore an earlier checkpoint.")
    for relative, expected in files.items():
        target = _inside(folder, relative, location)
        try:
            data = target.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            raise CorruptCheckpointError(
                f"{location} lists {relative!r}, but {target} is missing. The checkpoint is "
                "incomplete or damaged; restore an earlier checkpoint.") from error
        if _digest(data) != expected:
            raise CorruptCheckpointError(
                f"File {target} does not match the {ALGORITHM} digest recorded at save in "
                f"{location} (expected {str(expected)[:64]}, found {_digest(data)}): it was "
                "damaged or changed after the save. Restore an earlier checkpoint.")
    return len(files)


def _inside(folder: Location, relative: object, listing: Location) -> Location:
    """`folder / relative`, refusing paths that would leave `folder`."""
    target = folder
    try:
        if not isinstance(relative, str):
            raise InvalidNameError(f"expected a str, got {type(relative).__name__}")
        for part in relative.split("/"):
            target = target / validate_name(part, what=f"path component of {relative!r}")
    except InvalidNameError as error:
        raise CorruptCheckpointError(
            f"{listing} lists the path {relative!r:.100}, which is not a file inside {folder}: "
            f"{error}. The file is corrupt or hostile.") from error
    return target
