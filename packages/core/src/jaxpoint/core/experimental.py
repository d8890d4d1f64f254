"""`ocp.experimental.emergency`: orbax's path to the emergency manager, served by
`jaxpoint.core.emergency` (no experimental code lives here; it is a name only)."""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jaxpoint.core import emergency

__all__ = ["emergency"]


def __getattr__(name: str) -> Any:
    if name == "emergency":
        return importlib.import_module("jaxpoint.core.emergency")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
