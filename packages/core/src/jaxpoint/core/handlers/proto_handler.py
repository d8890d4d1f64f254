"""ProtoCheckpointHandler: a protocol buffer message as text format (`proto.pbtxt`)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from jaxpoint.core.errors import CorruptCheckpointError, InvalidArgumentError
from jaxpoint.core.handlers.base import CheckpointArgs, SaveContext, WriteStep
from jaxpoint.core.handlers.registry import register_with_handler
from jaxpoint.core.handlers.text_file import primary_writes_text
from jaxpoint.core.storage import Location, validate_name


def _text_format() -> Any:
    try:
        from google.protobuf import text_format
    except ImportError as error:  # protobuf is optional: only proto items need it.
        raise InvalidArgumentError(
            "Proto items need the protobuf package. To fix, `pip install protobuf`."
        ) from error
    return text_format


class ProtoCheckpointHandler:
    typestr: ClassVar[str] = "orbax.checkpoint._src.handlers.proto_checkpoint_handler.ProtoCheckpointHandler"

    def __init__(self, filename: str = "proto.pbtxt") -> None:
        self._filename = validate_name(filename, what="proto file name")

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        text = _text_format().MessageToString(args.item)
        return primary_writes_text(directory, self._filename, text, context=context)

    def finalize(self, directory: Location, *, context: SaveContext) -> None:
        return None

    def restore(self, directory: Location, args: Any | None = None) -> Any:
        message_type = getattr(args, "item", None)
        if message_type is None:
            raise InvalidArgumentError(
                f"Restoring the proto at {directory} needs its message class. To fix, pass "
                "args.ProtoRestore(MyMessage)."
            )
        text = (directory / self._filename).read_text()
        try:
            return _text_format().Parse(text, message_type())
        except Exception as error:
            raise CorruptCheckpointError(
                f"Could not parse {directory / self._filename} as {message_type.__name__}: {error}"
            ) from error

    def metadata(self, directory: Location) -> Any:
        return None


@register_with_handler(ProtoCheckpointHandler, for_save=True)
@dataclasses.dataclass
class ProtoSave(CheckpointArgs):
    item: Any


@register_with_handler(ProtoCheckpointHandler, for_restore=True)
@dataclasses.dataclass
class ProtoRestore(CheckpointArgs):
    item: Any = None
