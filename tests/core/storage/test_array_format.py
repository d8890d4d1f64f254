"""Default chunk shapes: bounded in bytes, contiguous in memory."""

import math

import numpy as np
import pytest
from jaxpoint.core.storage.array_format import (
    DEFAULT_CHUNK_BYTES,
    chunk_shape_for,
    contiguous_chunk_shape,
)


@pytest.mark.parametrize("shape", [(16384, 1024), (1024, 16384), (4, 4096, 4096), (2**25,),
                                   (3, 5, 7), (1, 1, 2**24), (0, 5), ()])
def test_default_chunks_are_bounded_and_contiguous(shape):
    chunk = chunk_shape_for(shape, 4, None)
    full = [max(1, d) for d in shape]
    assert len(chunk) == len(shape)
    assert all(1 <= c <= f for c, f in zip(chunk, full, strict=True))
    if math.prod(full) * 4 > DEFAULT_CHUNK_BYTES:
        split = [axis for axis, (c, f) in enumerate(zip(chunk, full, strict=True)) if c < f]
        # Only leading axes are split: every axis after the last split one stays whole.
        assert split and chunk[split[-1] + 1:] == tuple(full[split[-1] + 1:])
        assert all(c == 1 for c in chunk[:split[-1]])
        # Bounded, except where one row of the innermost axis alone is larger.
        assert math.prod(chunk) * 4 <= max(DEFAULT_CHUNK_BYTES, full[-1] * 4)
    else:
        assert chunk == tuple(full)


def test_contiguous_chunks_fill_the_limit():
    assert contiguous_chunk_shape((16384, 1024), 4, 8 << 20) == (2048, 1024)
    assert contiguous_chunk_shape((4, 4096, 4096), 4, 8 << 20) == (1, 512, 4096)
    assert contiguous_chunk_shape((10, 10), 4, 8 << 20) == (10, 10)


def test_explicit_chunk_byte_size_still_halves_the_largest_axes():
    assert chunk_shape_for((64, 64), np.dtype(np.float32).itemsize, 4096) == (32, 32)
