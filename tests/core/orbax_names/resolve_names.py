"""Prints, as JSON, which dotted names (argv[1], one per line) resolve under jaxpoint.core.

Run in a fresh interpreter so that only the lazy namespaces of `jaxpoint.core` are loaded,
never modules a test imported earlier.
"""

from __future__ import annotations

import json
import pathlib
import sys

import jaxpoint.core as ocp


def resolves(dotted: str) -> bool:
    value = ocp
    for part in dotted.split("."):
        if part not in dir(value) and not hasattr(value, part):
            return False
        value = getattr(value, part)
    return True


def main() -> None:
    names = pathlib.Path(sys.argv[1]).read_text().split()
    print(json.dumps({name: resolves(name) for name in names}))


if __name__ == "__main__":
    main()
