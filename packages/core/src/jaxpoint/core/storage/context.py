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


def write_context(*, fsync: bool = True) -> ts.Context:
    """A context for the writes of one save: the shared thread pools, its own cache pool.

    `fsync=False` (`StorageOptions.fsync`) leaves data files and manifests unflushed.

    TensorStore reuses an open OCDBT driver, cached manifest included, for every open of
    the same spec in the same context, and its writes trust that manifest. A failed save
    leaves such a driver alive as long as anything holds the exception (its traceback
    holds the stores), and the retry, writing into a freshly emptied folder of the same
    name, then follows the stale manifest into deleted files. A new cache pool per save
    means new drivers, which read the folder as it is.
    """
    return ts.Context(ts.Context.Spec({"cache_pool": {"total_bytes_limit": 0},
                                       "file_io_sync": fsync}),
                      parent=shared_context())
