"""Runs gcp-storage-emulator for tests, patched to behave like GCS for TensorStore.

Usage: ``python -m servers.gcs_launcher --port PORT --data-dir DIR``.

On top of the route patches in `servers.gcs_handlers`, the HTTP layer differs from
the shipped one:
- HTTP/1.1, so ``Expect: 100-continue`` is answered. curl sends that header with
  every upload over 1 MiB and waits 1 s for the answer that an HTTP/1.0 server
  never gives.
- One thread per connection and a listen backlog of 128, because curl keeps
  HTTP/1.1 connections open and a single-threaded server would serve only one of
  them; requests still run one at a time under a lock, so each precondition check
  and its write are atomic.
- TCP_NODELAY, so keep-alive responses are not held back ~40 ms each by Nagle.
- Request bodies are read off the socket before routing, so a handler that answers
  early (a failed precondition) cannot leave body bytes behind to be parsed as
  the next request on a kept-alive connection.
- Storage is on disk, and SIGTERM exits only between requests, so a restart keeps
  every acknowledged write.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.storage import Storage

from servers import gcs_handlers, launcher
from servers.loopback import HOST

logger = logging.getLogger(__name__)


class SerializedRequestHandler(emulator_server.RequestHandler):
    """The emulator's request handler, over HTTP/1.1 and under a process-wide lock."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each response would
    # wait ~40 ms for curl's delayed ACK on a kept-alive connection.
    disable_nagle_algorithm = True

    def __init__(self, storage: Storage, lock: threading.Lock, *args: Any, **kwargs: Any):
        self._lock = lock  # set first: the base __init__ handles the request at once
        super().__init__(storage, *args, **kwargs)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def _route(self, method: str) -> None:
        socket_file = self.rfile
        length = self.headers.get("Content-Length")
        if length is not None:
            self.rfile = io.BytesIO(socket_file.read(int(length)))
        elif self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # the router reads chunked bodies itself
        try:
            with self._lock:
                emulator_server.Router(self).handle(method)
        except ConnectionError:
            self.close_connection = True  # the client went away; nobody to answer
        except Exception:
            logger.exception("Handler failed for %s %s", method, self.path)
            self.close_connection = True
            self.send_error(500, "Emulator handler failed; see the emulator log")
        finally:
            self.rfile = socket_file


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of TensorStore's burst of
    # parallel connections, and each dropped SYN is retried only after 1 s.
    request_queue_size = 128


def serve(*, port: int, data_dir: Path) -> None:
    """Serves until SIGTERM, then exits between two requests."""
    launcher.exit_when_orphaned()
    gcs_handlers.install()
    storage = Storage(use_memory_fs=False, data_dir=str(data_dir.resolve()))
    lock = threading.Lock()
    httpd = _Server((HOST, port), functools.partial(SerializedRequestHandler, storage, lock))
    launcher.exit_between_requests(lock)  # storage on disk is then complete and consistent
    httpd.serve_forever()


if __name__ == "__main__":
    # The emulator logs every 404 as an ERROR; failures of ours are logged by this module.
    launcher.main(__doc__.splitlines()[0], storage_option="data-dir",
                  log_levels={"gcp_storage_emulator": logging.CRITICAL},
                  serve=lambda port, data_dir: serve(port=port, data_dir=data_dir))
