"""Storage layer: locations, commit protocols, TensorStore array specs and bulk I/O."""

from jaxpoint.core.storage.array_format import ArrayFormat
from jaxpoint.core.storage.array_io import (
    ArrayRead,
    ArrayWrite,
    StoredArray,
    open_arrays,
    read_arrays,
    write_arrays,
)
from jaxpoint.core.storage.commit import (
    COMMIT_MARKER,
    TMP_SUFFIX,
    CommitProtocol,
    TmpName,
    commit_protocol_for,
    is_tmp_name,
    parse_tmp_name,
)
from jaxpoint.core.storage.json_file import read_json
from jaxpoint.core.storage.location import Location, validate_name
from jaxpoint.core.storage.ocdbt_merge import merge_process_databases
from jaxpoint.core.storage.storage_options import StorageOptions

__all__ = [
    "COMMIT_MARKER",
    "TMP_SUFFIX",
    "ArrayFormat",
    "ArrayRead",
    "ArrayWrite",
    "CommitProtocol",
    "Location",
    "StorageOptions",
    "StoredArray",
    "TmpName",
    "commit_protocol_for",
    "is_tmp_name",
    "merge_process_databases",
    "open_arrays",
    "parse_tmp_name",
    "read_arrays",
    "read_json",
    "validate_name",
    "write_arrays",
]
