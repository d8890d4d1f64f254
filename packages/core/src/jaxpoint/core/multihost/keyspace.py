"""Where jaxpoint's collectives live in the coordination service's key-value store.

Every collective call gets its own key prefix, which doubles as its barrier id:
`jaxpoint/<kind>/<name>/<group>/<call>`. `<call>` counts this process's earlier calls with
the same kind, name and group. Members of a group make their calls of one name in the same
order, so the counters agree across processes without any communication; and because each
call gets a fresh prefix, two managers or two saves in flight never share a barrier, and a
barrier can be reused in a loop.
"""

from __future__ import annotations

import collections
import threading
import urllib.parse

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.multihost.processes import ProcessGroup

_ROOT = "jaxpoint"

_lock = threading.Lock()
_calls: collections.Counter[tuple[str, str, str]] = collections.Counter()


def check_name(kind: str, name: str) -> None:
    """Raises `InvalidArgumentError` unless `name` can name a `kind` call."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(
            f"Expected a non-empty str name for a {kind}, got {name!r}. To fix, pass a name "
            "that says what the processes wait for, e.g. 'save/write_done'."
        )


def next_call_key(kind: str, name: str, group: ProcessGroup) -> str:
    """Returns the key prefix (and barrier id) of this process's next `kind` call on `name`."""
    check_name(kind, name)
    # Quoting '/' keeps one name's keys from nesting under another's prefix.
    quoted = urllib.parse.quote(name, safe="")
    with _lock:
        call = _calls[kind, name, group.label]
        _calls[kind, name, group.label] = call + 1
    return f"{_ROOT}/{kind}/{quoted}/{group.label}/{call}"


def arrival_key(prefix: str, process: int) -> str:
    """The key under which `process` records that it reached the call at `prefix`."""
    return f"{prefix}/arrived/{process}"


def arrivals_dir(prefix: str) -> str:
    """The key-value directory holding every arrival of the call at `prefix`."""
    return f"{prefix}/arrived/"


def process_of_arrival(key: str) -> int:
    """The process index an arrival key was written by."""
    return int(key.rsplit("/", 1)[1])


def acknowledgements_key(prefix: str) -> str:
    """The counter members increment once they no longer need the call's keys."""
    return f"{prefix}/acknowledgements"
