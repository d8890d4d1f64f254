"""The server-subprocess side of every test server's lifecycle, shared by the launchers.

A launcher (`moto_launcher`, `gcs_launcher`) runs in a subprocess that `ServerProcess`
starts and stops. Each one:
- exits when the pytest process that started it is gone (`exit_when_orphaned`): session
  teardown stops servers normally, but a killed pytest (SIGKILL, a CI timeout) would
  otherwise leave them holding ports and CPU;
- serves requests one at a time under a lock, and on SIGTERM exits only between two
  requests (`exit_between_requests`), so a restart keeps every acknowledged write;
- takes ``--port`` and one storage path on its command line (`main`).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType


def exit_when_orphaned(*, interval_s: float = 1.0) -> None:
    """Starts a daemon thread that exits the process once its parent has changed."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def exit_between_requests(lock: threading.Lock, *, before_exit: Callable[[], None] | None = None) -> None:
    """On SIGTERM: wait for the request in flight, run `before_exit`, exit with status 0.

    The lock is taken and never released, so no request can change state after it.
    """

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        lock.acquire()
        if before_exit is not None:
            before_exit()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)


def main(description: str, *, storage_option: str, serve: Callable[[int, Path], None],
         log_levels: dict[str, int] | None = None) -> None:
    """Parses ``--port PORT --<storage_option> PATH`` and calls `serve(port, path)`.

    `log_levels` raises the level of libraries whose per-request logs would drown the
    server log.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(f"--{storage_option}", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name, level in (log_levels or {}).items():
        logging.getLogger(name).setLevel(level)
    serve(args.port, getattr(args, storage_option.replace("-", "_")))
