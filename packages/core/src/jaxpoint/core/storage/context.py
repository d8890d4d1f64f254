"""The one TensorStore context every jaxpoint read and write shares.

Sharing a context shares thread pools, the in-memory kvstore and OCDBT caches, so
concurrent saves neither oversubscribe two cores nor open the same database twice.
"""

from __future__ import annotations

import functools

import tensorstore as ts


@functools.cache
def shared_context() -> ts.Context:
    """Returns the process-wide TensorStore context."""
    return ts.Context(
        {
            # Durable writes: fsync data files and manifests before a commit.
            "file_io_sync": True,
            "cache_pool": {"total_bytes_limit": 0},
        }
    )
