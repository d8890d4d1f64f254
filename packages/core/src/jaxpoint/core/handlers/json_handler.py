"""JsonCheckpointHandler: a JSON-serialisable value in one file (default name `metadata`)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.handlers.base import CheckpointArgs, SaveContext, WriteStep
from jaxpoint.core.handlers.registry import register_with_handler
from jaxpoint.core.handlers.text_file import primary_writes_text
from jaxpoint.core.storage import Location, read_json, validate_name


class JsonCheckpointHandler:
    """Saves a dict or list as JSON; the primary process writes it."""

    typestr: ClassVar[str] = "orbax.checkpoint._src.handlers.json_checkpoint_handler.JsonCheckpointHandler"

    def __init__(self, filename: str | None = None) -> None:
        self._filename = validate_name(filename or "metadata", what="JSON file name")

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        try:
            # Serialise now so that later changes to the caller's dict cannot leak in.
            text = json.dumps(args.item)
        except (TypeError, ValueError) as error:
            raise InvalidArgumentError(
                f"Expected a JSON-serialisable value for JsonSave at {directory}, got "
                f"{type(args.item).__name__}: {error}. To fix, convert values to str/int/"
                "float/bool/list/dict, or save arrays with StandardSave."
            ) from error
        return primary_writes_text(directory, self._filename, text, context=context)

    def finalize(self, directory: Location, *, context: SaveContext) -> None:
        return None

    def restore(self, directory: Location, args: Any | None = None) -> Any:
        return read_json(directory / self._filename, expect=object)

    def metadata(self, directory: Location) -> Any:
        return None


@register_with_handler(JsonCheckpointHandler, for_save=True)
@dataclasses.dataclass
class JsonSave(CheckpointArgs):
    item: Any


@register_with_handler(JsonCheckpointHandler, for_restore=True)
@dataclasses.dataclass
class JsonRestore(CheckpointArgs):
    item: Any = None
