"""Runs moto's S3 server for tests: serialized requests, state kept across restarts.

Usage: ``python -m servers.moto_launcher --port PORT --snapshot FILE``.

Differences from ``moto_server``, each for commit-protocol tests:
- Requests run one at a time. moto checks ``If-Match``/``If-None-Match`` and then
  writes, without a lock, so two racing conditional PUTs could both succeed; real S3
  makes that check atomic, and commit tests depend on it.
- SIGTERM waits for the request in flight, saves every object to the snapshot file
  and exits; the next start loads it (see `servers.s3_snapshot`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from servers import launcher, s3_snapshot
from servers.loopback import HOST

_WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class SerializedApp:
    """Wraps a WSGI app so that each request, response body included, runs under `lock`."""

    def __init__(self, app: _WsgiApp, lock: threading.Lock) -> None:
        self._app = app
        self._lock = lock

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            body = self._app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()


def serve(*, port: int, snapshot: Path) -> None:
    """Serves until SIGTERM, then saves the snapshot and exits the process."""
    launcher.exit_when_orphaned()
    s3_snapshot.load_from(snapshot)
    lock = threading.Lock()
    app = SerializedApp(DomainDispatcherApplication(create_backend_app), lock)
    server = make_server(HOST, port, app, threaded=True, request_handler=MotoRequestHandler)
    launcher.exit_between_requests(lock, before_exit=lambda: s3_snapshot.save_to(snapshot))
    server.serve_forever()


if __name__ == "__main__":
    # werkzeug logs one line per request otherwise.
    launcher.main(__doc__.splitlines()[0], storage_option="snapshot", log_levels={"werkzeug": logging.WARNING},
                  serve=lambda port, snapshot: serve(port=port, snapshot=snapshot))
