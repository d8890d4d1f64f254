"""Helpers shared by the manager tests: small trees, options and on-disk views."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from jaxpoint.core import args
from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
from jaxpoint.core.manager.leases import LEASE_FOLDER
from jaxpoint.core.manager.writer_lock import WRITER_LOCK_FILE


def tree(step: int) -> dict[str, Any]:
    """A small pytree whose values identify the step it was saved at."""
    return {"w": np.full((2, 3), float(step), dtype=np.float32), "step": np.int32(step)}


def sync_options(**options: Any) -> CheckpointManagerOptions:
    """Options with synchronous saves, so tests see results without waiting."""
    return CheckpointManagerOptions(enable_async_checkpointing=False, **options)


def save_steps(manager: CheckpointManager, steps: list[int], *,
               losses: dict[int, float] | None = None) -> None:
    for step in steps:
        metrics = None if losses is None or step not in losses else {"loss": losses[step]}
        manager.save(step, args=args.StandardSave(tree(step)), metrics=metrics, force=True)
    manager.wait_until_finished()


def step_folders(directory: Path) -> list[str]:
    """Names in `directory` other than the manager's bookkeeping folders."""
    return sorted(p.name for p in Path(directory).iterdir()
                  if p.name not in ("metadata", LEASE_FOLDER, WRITER_LOCK_FILE))


def restored_step(manager: CheckpointManager, step: int | None = None) -> int:
    """The step number stored inside the tree restored from `step`."""
    return int(manager.restore(step)["step"])
