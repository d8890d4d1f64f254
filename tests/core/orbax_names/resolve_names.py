"""Prints, as JSON, how each dotted name (argv[1], one per line) resolves under jaxpoint.core:
`{"resolves": {name: bool}, "missing_from_dir": [names that resolve but dir() omits]}`.

Each namespace is first touched in its own forked child of a process that has imported only
`jaxpoint.core` (and the third-party libraries it builds on, to keep the forks cheap), so
a namespace that resolves only after something else imported it shows up as a gap.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from collections import defaultdict

import jax  # noqa: F401 - imported before forking so that each child does not pay for it
import jaxpoint.core as ocp
import numpy  # noqa: F401
import tensorstore  # noqa: F401

assert "jaxpoint.core.handlers" not in sys.modules, "Expected only jaxpoint.core imported."


def resolve(dotted: str) -> tuple[bool, bool]:
    """(resolves, every part is listed by dir() of its parent)."""
    value, listed = ocp, True
    for part in dotted.split("."):
        listed = listed and part in dir(value)
        try:
            value = getattr(value, part)
        except AttributeError:
            return False, False
    return True, listed


def _resolve_in_child(names: list[str]) -> dict[str, tuple[bool, bool]]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: touches this namespace first, reports, exits at once
        os.close(read_end)
        with os.fdopen(write_end, "w") as out:
            json.dump({name: resolve(name) for name in names}, out)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as report:
        found = json.load(report)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"Resolving {names[:3]}... crashed."
    return {name: tuple(value) for name, value in found.items()}


def main() -> None:
    names = pathlib.Path(sys.argv[1]).read_text().split()
    by_namespace: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_namespace[name.rsplit(".", 1)[0] if "." in name else ""].append(name)
    found: dict[str, tuple[bool, bool]] = {}
    for group in by_namespace.values():
        found.update(_resolve_in_child(group))
    print(json.dumps({
        "resolves": {name: found[name][0] for name in names},
        "missing_from_dir": sorted(n for n in names if found[n][0] and not found[n][1]),
    }))


if __name__ == "__main__":
    main()
