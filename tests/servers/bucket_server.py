"""What every loopback bucket server shares: its process, port, lifecycle and bucket."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Self

from servers.loopback import HOST, free_port
from servers.process import ServerProcess


class BucketServer:
    """Abstract: a server process on a fixed loopback port with one default bucket.

    Subclasses name their launcher and say how a bucket is created (`create_bucket`).
    """

    def __init__(self, *, name: str, module: str, args: list[str], port: int | None,
                 bucket: str, log_path: Path) -> None:
        self.bucket = bucket
        self.port = port if port is not None else free_port()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._process = ServerProcess(name=name, module=module,
                                      args=[*args, "--port", str(self.port)],
                                      port=self.port, log_path=log_path)

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._process.is_running

    def create_bucket(self, name: str) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Starts the server (a no-op when running) and makes sure the bucket exists."""
        self._process.start()
        self.create_bucket(self.bucket)

    def stop(self) -> None:
        """Stops between requests; acknowledged writes are kept for `start()`."""
        self._process.stop()

    def restart(self) -> None:
        """Stops and starts on the same port, keeping every acknowledged write."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
