"""`StorageOptions`: the tuning knobs of one storage location.

Every `Location` carries one; whatever is joined onto it (`location / "step"`) keeps it,
so a knob set where a checkpoint folder is named reaches every read and write below it.
A checkpointer given `storage_options=` applies them to each path it is handed.
The one environment variable, `JAXPOINT_OBJECT_STORE_MAX_RETRIES`, is only a default,
read when an options record is created.
"""

from __future__ import annotations

import dataclasses
import os

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.validation import require_int_at_least, require_positive_int

RETRIES_ENV = "JAXPOINT_OBJECT_STORE_MAX_RETRIES"
# Bytes of compressed shard writes handed to TensorStore and not yet committed, per save:
# their encoded chunks are new memory until the commit, so this keeps a save's peak flat.
# Uncompressed writes reference the caller's buffers (the crc32c codec adds 4 bytes per
# chunk, no copy), so nothing bounds them: a 1 GiB bound made 4 GiB saves 25% slower.
COMPRESSED_WRITE_BYTES_IN_FLIGHT = 1024 * 1024 * 1024
# Bytes of reads not yet decoded into their buffers, per restore: each holds its stored
# bytes next to its buffer, so this bounds a restore's memory above the state itself.
HOST_READ_BYTES_IN_FLIGHT = 256 * 1024 * 1024
# Reading into buffers that are copied to an accelerator and released as they finish
# keeps more in flight: the host holds each buffer only until its copy is done.
DEVICE_READ_BYTES_IN_FLIGHT = 1024 * 1024 * 1024
# Requests kept in flight whatever their size, so large arrays still overlap their I/O and
# every core has a chunk to decode (TensorStore decodes one chunk on one thread).
MIN_REQUESTS_IN_FLIGHT = max(4, os.cpu_count() or 1)
LOCAL_DATA_FILE_BYTES = 2 * 1024**3
# Object stores read whole objects for ranged reads through OCDBT: keep files small there.
OBJECT_STORE_DATA_FILE_BYTES = 16 * 1024**2


def retries_from_environment() -> int | None:
    """`JAXPOINT_OBJECT_STORE_MAX_RETRIES` as a number, or None when it is unset."""
    text = os.environ.get(RETRIES_ENV)
    if text is None or not text.strip():
        return None
    try:
        retries = int(text)
    except ValueError:
        retries = -1
    if retries < 0:
        raise InvalidArgumentError(
            f"Expected {RETRIES_ENV} to be a whole number >= 0, got {text!r}. To fix, set it "
            "to the number of retries per request (e.g. 5), or unset it for TensorStore's 32."
        )
    return retries


@dataclasses.dataclass(frozen=True, kw_only=True)
class StorageOptions:
    """How jaxpoint reads and writes one location; None picks the default named.

    - `object_store_max_retries`: retries per gs:// or s3:// request. None: TensorStore's
      32, waiting 1 s doubling to 32 s, so an unreachable server fails a call after about
      15 minutes; N bounds that to about 2**N - 1 seconds (N <= 5). Default: the
      environment variable `JAXPOINT_OBJECT_STORE_MAX_RETRIES` when set.
    - `fsync`: flush files and folders to the disk before a save commits (local disk).
      False trades durability across a machine crash for speed, e.g. on a RAM disk.
    - `target_data_file_size`: bytes at which an OCDBT data file rolls over. None: 2 GiB on
      local disk, 16 MiB in object stores. `PyTreeSave.ocdbt_target_data_file_size` wins.
    - `write_bytes_in_flight`: shard bytes a save hands to TensorStore at once. None: 1 GiB
      for compressed writes, unbounded for uncompressed ones (they reference the caller's
      buffers). A handler's `save_concurrent_gb` wins.
    - `read_bytes_in_flight`: bytes a restore reads ahead of decoding. None: 256 MiB into
      host memory, 1 GiB when the arrays go on to an accelerator. A handler's
      `restore_concurrent_gb` wins.
    - `min_requests_in_flight`: requests kept in flight whatever the byte bounds say.
      None: the number of CPU cores, at least 4.
    """

    object_store_max_retries: int | None = dataclasses.field(
        default_factory=retries_from_environment)
    fsync: bool = True
    target_data_file_size: int | None = None
    write_bytes_in_flight: int | None = None
    read_bytes_in_flight: int | None = None
    min_requests_in_flight: int | None = None

    def __post_init__(self) -> None:
        require_int_at_least(self.object_store_max_retries, 0, allow_none=True,
                             what="StorageOptions.object_store_max_retries",
                             fix="pass the retries per request (e.g. 5), or None for "
                                 "TensorStore's 32")
        if not isinstance(self.fsync, bool):
            raise InvalidArgumentError(
                f"Expected StorageOptions.fsync to be True or False, got {self.fsync!r}."
            )
        for name, example in (("target_data_file_size", "64 * 1024**2"),
                              ("write_bytes_in_flight", "512 * 1024**2"),
                              ("read_bytes_in_flight", "512 * 1024**2"),
                              ("min_requests_in_flight", "8")):
            require_positive_int(getattr(self, name), allow_none=True,
                                 what=f"StorageOptions.{name}",
                                 fix=f"pass e.g. {example}, or None for the default")

    def data_file_bytes(self, *, is_local: bool) -> int:
        """The OCDBT data-file size to write with, on local disk or in an object store."""
        if self.target_data_file_size is not None:
            return self.target_data_file_size
        return LOCAL_DATA_FILE_BYTES if is_local else OBJECT_STORE_DATA_FILE_BYTES

    def write_bound(self, *, is_compressed: bool) -> float:
        """Shard bytes a save may have in flight (inf: unbounded)."""
        if self.write_bytes_in_flight is not None:
            return self.write_bytes_in_flight
        return COMPRESSED_WRITE_BYTES_IN_FLIGHT if is_compressed else float("inf")

    def read_bound(self, *, to_accelerator: bool) -> int:
        """Bytes a restore may read ahead, into host memory or on to an accelerator."""
        if self.read_bytes_in_flight is not None:
            return self.read_bytes_in_flight
        return DEVICE_READ_BYTES_IN_FLIGHT if to_accelerator else HOST_READ_BYTES_IN_FLIGHT

    @property
    def min_requests(self) -> int:
        """Requests kept in flight whatever the byte bounds say."""
        return self.min_requests_in_flight or MIN_REQUESTS_IN_FLIGHT
