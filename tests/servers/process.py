"""A server subprocess bound to one fixed loopback port, restartable in place.

The port stays the same across restarts so that specs, URLs and environment variables
handed out before a restart keep working after it, as they would against a real
object store that had a brief outage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
from collections.abc import Sequence
from pathlib import Path

from servers.loopback import HOST, http_request

# The launchers import `servers.*`, so the subprocess needs `tests/` on its path.
_TESTS_DIR = Path(__file__).resolve().parents[1]


class ServerStartError(RuntimeError):
    """A test server did not answer on its port in time."""


class ServerStopError(RuntimeError):
    """A test server ignored SIGTERM and had to be killed."""


class ServerProcess:
    """Runs `python -m <module> ...` and waits until it answers ``GET /`` on `port`.

    `stop()` sends SIGTERM, which the launchers treat as "finish the request in
    flight, persist everything acknowledged, exit"; SIGKILL is only the fallback
    for a launcher that does not exit within `stop_timeout_s`.
    """

    def __init__(
        self,
        *,
        name: str,
        module: str,
        args: Sequence[str],
        port: int,
        log_path: Path,
    ) -> None:
        self.name = name
        self.port = port
        self._argv = [sys.executable, "-m", module, *args]
        self._log_path = log_path
        self._ready_url = f"http://{HOST}:{port}/"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, timeout_s: float = 30.0) -> None:
        """Starts the server and blocks until it answers, or raises ServerStartError."""
        if self.is_running:
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_TESTS_DIR), env.get("PYTHONPATH", "")) if p
        )
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._argv, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self._wait_until_ready(timeout_s)

    def stop(self, *, stop_timeout_s: float = 15.0) -> None:
        """Stops the server gracefully; a no-op when it is not running."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ServerStopError(
                f"Expected {self.name} to exit within {stop_timeout_s} s of SIGTERM, "
                f"but it had to be killed; its state may be lost. See {self._log_path}."
            ) from None

    def log_tail(self, *, max_chars: int = 4000) -> str:
        """The end of the server's combined stdout/stderr, for error messages."""
        try:
            return self._log_path.read_text(errors="replace")[-max_chars:]
        except FileNotFoundError:
            return ""

    def _wait_until_ready(self, timeout_s: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerStartError(
                    f"Expected {self.name} to serve on {HOST}:{self.port}, but it exited "
                    f"with code {self._process.returncode}. Log tail:\n{self.log_tail()}"
                )
            try:
                if http_request("GET", self._ready_url, timeout_s=2.0).status < 500:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        self.stop()
        raise ServerStartError(
            f"Expected {self.name} to answer {self._ready_url} within {timeout_s} s, "
            f"but it did not. Log tail:\n{self.log_tail()}"
        )
