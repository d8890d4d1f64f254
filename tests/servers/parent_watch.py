"""Ends a server subprocess when the pytest process that started it is gone.

Session teardown stops the servers normally; this covers a pytest that was killed
(SIGKILL, a CI timeout), which would otherwise leave servers holding ports and CPU.
"""

from __future__ import annotations

import os
import threading
import time


def exit_when_orphaned(*, interval_s: float = 1.0) -> None:
    """Starts a daemon thread that exits the process once its parent has changed."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
