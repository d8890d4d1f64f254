"""Emergency checkpointing: a fast local tier per process, recovery after losing a host."""

from jaxpoint.core.emergency.local_tier import LocalTier

__all__ = ["LocalTier"]
