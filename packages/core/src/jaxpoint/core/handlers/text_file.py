"""The write step shared by items stored as one text file (JSON, protos)."""

from __future__ import annotations

from jaxpoint.core.handlers.base import SaveContext, WriteStep
from jaxpoint.core.storage import Location


def primary_writes_text(directory: Location, filename: str, text: str, *,
                        context: SaveContext) -> WriteStep:
    """A write step in which the primary process writes `text` to `directory/filename`."""
    target = directory / filename

    def write() -> None:
        if context.is_primary:
            directory.make_folder()
            target.write_text(text)

    return write
