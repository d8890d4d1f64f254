"""Emergency checkpointing: a fast local tier per process, a persistent tier, recovery after
losing a host. Orbax's `experimental.emergency.checkpoint_manager` names (see docs/emergency.md)."""

from jaxpoint.core.emergency import checkpoint_manager
from jaxpoint.core.emergency.checkpoint_manager import CheckpointManager
from jaxpoint.core.emergency.local_tier import LocalTier
from jaxpoint.core.emergency.options import (
    CheckpointManagerOptions,
    LocalCheckpointOptions,
    MultiprocessingOptions,
    PersistentCheckpointOptions,
)

__all__ = [
    "CheckpointManager", "CheckpointManagerOptions", "LocalCheckpointOptions", "LocalTier",
    "MultiprocessingOptions", "PersistentCheckpointOptions",
    # orbax's module path: ocp.experimental.emergency.checkpoint_manager
    "checkpoint_manager",
]
