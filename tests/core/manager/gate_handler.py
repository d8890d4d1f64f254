"""A real handler for tests that need a save to wait, fail or crash at a chosen moment.

It writes its value as JSON like any handler, through the same checkpointer pipeline; the
args only add when the write happens (after `wait_for` is set), or that it fails or ends
the process in the middle of writing, as a full disk or a kill would.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, ClassVar

from jaxpoint.core.handlers import CheckpointArgs, SaveContext, WriteStep, register_with_handler
from jaxpoint.core.storage import Location, read_json
from jaxpoint.core.testing.multiprocess import crash_process


class GateHandler:
    typestr: ClassVar[str] = "tests.core.manager.gate_handler.GateHandler"

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        def write() -> None:
            directory.make_folder()
            (directory / "partial").write_text("written before the gate")
            if args.wait_for is not None and not args.wait_for.wait(timeout=60):
                raise TimeoutError("the test never opened the gate")
            if args.crash:
                crash_process(9)
            if args.fail_with is not None:
                raise OSError(args.fail_with)
            (directory / "value").write_json(args.value)

        return write

    def finalize(self, directory: Location, *, context: SaveContext) -> None:
        return None

    def restore(self, directory: Location, args: Any | None = None) -> Any:
        return read_json(directory / "value", expect=object)

    def metadata(self, directory: Location) -> Any:
        return None


@register_with_handler(GateHandler, for_save=True)
@dataclasses.dataclass
class GateSave(CheckpointArgs):
    value: Any
    wait_for: threading.Event | None = None
    fail_with: str | None = None
    crash: bool = False


@register_with_handler(GateHandler, for_restore=True)
@dataclasses.dataclass
class GateRestore(CheckpointArgs):
    pass
