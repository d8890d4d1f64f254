"""A process that dies by SIGKILL in the middle of an asynchronous save to a bucket.

Usage: ``python -m object_storage.killed_save URL`` with `tests/` on the path and the
environment of the object-store fixtures. Commits step 0, starts an asynchronous save of
step 1 and kills itself as soon as the first of step 1's array data files is in the
bucket: the state a power cut or an OOM kill leaves behind. Exits only by the signal.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from jaxpoint.core import args
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.storage import Location
from object_storage.support import sharded_tree

BIG_MIB = 32
STEP_DATA_FILES = ("default", "ocdbt.process_0", "d")


def main(url: str) -> None:
    options = CheckpointManagerOptions(enable_async_checkpointing=True)
    manager = CheckpointManager(url, options=options)
    manager.save(0, args=args.StandardSave(sharded_tree(0)))
    manager.wait_until_finished()
    manager.save(1, args=args.StandardSave(sharded_tree(1, big_mib=BIG_MIB)))
    data = Location.parse(url) / "1"
    for name in STEP_DATA_FILES:
        data = data / name
    deadline = time.monotonic() + 60
    while not data.exists():
        if time.monotonic() > deadline:
            sys.exit(f"Expected step 1's data files under {data} within 60 s; none appeared.")
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1])
