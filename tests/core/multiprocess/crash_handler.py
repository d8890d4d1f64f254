"""A user handler whose write kills one chosen process (or fails there), as a machine
failure (or a full disk) would.

Registered like any user handler (`register_with_handler`), so the kill happens inside the
checkpointer's real write step, after the other items of the step were staged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from jaxpoint.core import multihost
from jaxpoint.core.handlers import CheckpointArgs, SaveContext, WriteStep, register_with_handler
from jaxpoint.core.storage import Location, read_json
from jaxpoint.core.testing.multiprocess import crash_process

CRASH_EXIT_CODE = 9


class CrashHandler:
    typestr: ClassVar[str] = "tests.core.multiprocess.crash_handler.CrashHandler"

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        def write() -> None:
            directory.make_folder()
            (directory / f"written-by-{context.process_index}").write_json(True)
            if multihost.process_index() == args.failing:
                raise OSError(f"disk full on process {args.failing}")
            if multihost.process_index() == args.crashing:
                crash_process(CRASH_EXIT_CODE)

        return write

    def finalize(self, directory: Location, *, context: SaveContext) -> None:
        return None

    def restore(self, directory: Location, args: Any | None = None) -> Any:
        return read_json(directory / "written-by-0", expect=object)

    def metadata(self, directory: Location) -> Any:
        return None


@register_with_handler(CrashHandler, for_save=True)
@dataclasses.dataclass
class CrashSave(CheckpointArgs):
    crashing: int | None = None
    failing: int | None = None
