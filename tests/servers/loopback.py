"""Loopback networking helpers shared by the test servers.

Everything here talks to 127.0.0.1 only and ignores proxy settings, so a developer's
``http_proxy`` can never route a test request off the machine.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping

HOST = "127.0.0.1"

# Retry pacing for TensorStore kvstores on these servers. A restart here takes about a
# second; TensorStore's default backoff (first retry after 1 s, doubling) would turn
# that into several seconds per restart test. The retry count stays at the default 32.
TENSORSTORE_RETRIES = {"max_retries": 32, "initial_delay": "100ms", "max_delay": "1s"}

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@dataclasses.dataclass(frozen=True, kw_only=True)
class HttpReply:
    """Status and body of one HTTP exchange, errors included."""

    status: int
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def http_request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    json_body: object | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> HttpReply:
    """Sends one request without proxies; 4xx/5xx come back as replies, not exceptions."""
    all_headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return HttpReply(status=response.status, body=response.read())
    except urllib.error.HTTPError as error:
        return HttpReply(status=error.code, body=error.read())
