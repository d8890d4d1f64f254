"""The training time each checkpoint covers, reported to `jax.monitoring` as Orbax does."""

from __future__ import annotations

import threading
import time

import jax

SAVED_DURATION_EVENT = "/jax/checkpoint/write/duration_since_last_checkpoint_secs"

_lock = threading.Lock()
_last_start_s = time.time()  # the first checkpoint covers the time since the program began


def record_saved_duration(checkpoint_start_time: float) -> None:
    """Records the seconds from the previous checkpoint's start to this one's start.

    Start times, not end times: an async save's background write overlaps training, which
    the next checkpoint covers.
    """
    global _last_start_s
    with _lock:
        duration_s = checkpoint_start_time - _last_start_s
        _last_start_s = checkpoint_start_time
    jax.monitoring.record_event_duration_secs(SAVED_DURATION_EVENT, duration_s)
