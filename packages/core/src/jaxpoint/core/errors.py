"""One error hierarchy for jaxpoint: every failure is a `CheckpointError`.

Messages follow one shape: what was expected, what was found, where (step, item,
tree path, process, file) and how to fix it.
"""

from __future__ import annotations


class CheckpointError(Exception):
    """Base class of every error jaxpoint raises on purpose."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A path holds no committed checkpoint."""


class UncommittedCheckpointError(CheckpointNotFoundError):
    """A path holds a save that never committed (a tmp folder or a missing marker)."""


class CheckpointExistsError(CheckpointError, FileExistsError):
    """Saving onto a path that already holds something, without `force=True`."""


class StepNotFoundError(CheckpointNotFoundError):
    """A manager was asked for a step it does not have."""


class StepAlreadyExistsError(CheckpointExistsError):
    """A manager was asked to save a step that is already committed."""


class TreeMismatchError(CheckpointError, ValueError):
    """A target tree does not match the saved tree (keys, shapes or dtypes)."""


class UnsupportedLeafError(CheckpointError, TypeError):
    """A pytree leaf has a type jaxpoint cannot save."""


class InvalidNameError(CheckpointError, ValueError):
    """An item, key or step name would escape its folder or is otherwise unusable."""


class InvalidArgumentError(CheckpointError, ValueError):
    """An option or argument has a value that cannot work."""


class UnregisteredArgsError(CheckpointError, TypeError):
    """An args object has no handler registered for it."""


class ReadOnlyError(CheckpointError, PermissionError):
    """A write was asked of a read-only manager or location."""


class CorruptCheckpointError(CheckpointError):
    """Stored bytes or metadata fail validation (checksum, JSON, bounds)."""


class StorageError(CheckpointError, OSError):
    """The storage refused an operation (space, permissions, network)."""


class DirectoryInUseError(CheckpointError):
    """Another live process holds a checkpoint directory for writing."""


class BarrierTimeoutError(CheckpointError, TimeoutError):
    """Processes did not all reach a barrier in time."""


class BackgroundSaveError(CheckpointError):
    """An asynchronous save failed; raised on the next call into the same object."""


class SaveAbandonedError(CheckpointError):
    """A save in flight was abandoned before its commit (a second Ctrl-C at exit)."""


class ProcessFailureError(CheckpointError):
    """A process reported a failure at an agreement point, so every process raises.

    `failures` maps each failed process index to its reported error message.
    """

    def __init__(self, message: str, *, failures: dict[int, str] | None = None) -> None:
        super().__init__(message)
        self.failures: dict[int, str] = dict(failures or {})


class ProcessRunError(CheckpointError):
    """Processes started by `jaxpoint.core.testing.multiprocess` did not all return.

    `outcomes` holds every process's `ProcessOutcome`, in process order.
    """

    def __init__(self, message: str, *, outcomes: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.outcomes: tuple[object, ...] = tuple(outcomes)


__all__ = [
    "BackgroundSaveError",
    "BarrierTimeoutError",
    "CheckpointError",
    "CheckpointExistsError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "InvalidArgumentError",
    "InvalidNameError",
    "ProcessFailureError",
    "ProcessRunError",
    "ReadOnlyError",
    "StepAlreadyExistsError",
    "StepNotFoundError",
    "StorageError",
    "TreeMismatchError",
    "UncommittedCheckpointError",
    "UnregisteredArgsError",
    "UnsupportedLeafError",
]
