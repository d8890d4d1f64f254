"""jaxpoint.core: fast, atomic, Orbax-compatible checkpointing for JAX.

`import jaxpoint.core as ocp` runs code written for orbax-checkpoint's `args=` API.
Names are re-exported lazily: each submodule loads on first use, so importing
`jaxpoint.core.errors` or `jaxpoint.core.multihost` does not pull in TensorStore.
"""

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "jaxpoint.core.checkpointers": (
        "AsyncCheckpointer", "AsyncOptions", "Checkpointer", "MultiprocessingOptions",
        "PyTreeCheckpointer", "StandardCheckpointer", "StepMetadata", "restore", "save",
    ),
    "jaxpoint.core.errors": (
        "BackgroundSaveError", "BarrierTimeoutError", "CheckpointError", "CheckpointExistsError",
        "CheckpointNotFoundError", "CorruptCheckpointError", "DirectoryInUseError",
        "ProcessFailureError",
        "StepAlreadyExistsError", "StepNotFoundError", "StorageError", "TreeMismatchError",
        "UncommittedCheckpointError",
    ),
    "jaxpoint.core.inspection": ("ItemReport", "VerificationReport", "describe", "verify"),
    "jaxpoint.core.manager": (
        "AnyPreservationPolicy", "AnySavePolicy", "BestN", "CheckpointInfo", "CheckpointManager",
        "CheckpointManagerOptions", "CompositeStepNameFormat", "ContinuousCheckpointingPolicy",
        "CustomSteps", "DecisionContext", "EveryNSeconds", "EveryNSteps", "FixedIntervalPolicy",
        "InitialSavePolicy", "LatestN", "PreemptionCheckpointingPolicy", "PreservationContext",
        "PreservationPolicy", "PreserveAll", "RootMetadata", "SaveDecisionPolicy",
        "ShouldSaveFnPolicy", "SpecificStepsPolicy", "StandardStepNameFormat", "StepNameFormat",
        "checkpoints_iterator", "composite_name_format", "hold_read_lease",
        "standard_name_format", "wait_for_new_checkpoint",
    ),
    "jaxpoint.core.handlers": (
        "ArrayCheckpointHandler", "ArrayMetadata", "ArrayRestoreArgs", "CheckpointHandler",
        "CheckpointHandlerRegistry", "CompositeCheckpointHandler",
        "DefaultCheckpointHandlerRegistry", "JaxRandomKeyCheckpointHandler", "JsonCheckpointHandler",
        "NumpyRandomKeyCheckpointHandler", "ProtoCheckpointHandler", "PyTreeCheckpointHandler",
        "RestoreArgs", "SaveArgs", "SingleReplicaArrayHandler", "SingleReplicaArrayRestoreArgs",
        "StandardCheckpointHandler", "register_with_handler",
        # What a handler author needs besides CheckpointHandler (see docs/architecture.md).
        "CheckpointArgs", "SaveContext", "WriteStep",
    ),
    "jaxpoint.core.storage": ("Location", "StorageOptions"),
    "jaxpoint.core.tree.placeholder": ("PLACEHOLDER",),
    "jaxpoint.core.tree.transforms": ("RestoreTransform", "Transform", "apply_transformations",
                                      "merge_trees"),
}
_SUBMODULES = (
    "args", "checkpoint_args", "checkpoint_manager", "checkpoint_managers", "checkpoint_utils",
    "checkpointers", "emergency", "errors", "experimental", "handlers", "manager", "metadata",
    "multihost", "options", "path", "test_utils", "transform_utils", "tree", "type_handlers", "utils",
)
_ORIGIN = {name: module for module, names in _EXPORTS.items() for name in names}

# Type checkers and IDEs read the real names here; at run time `__getattr__` imports
# each on first use. tests/core/test_public_api.py keeps this block and _EXPORTS equal.
if TYPE_CHECKING:
    from jaxpoint.core import (
        args,
        checkpoint_args,
        checkpoint_manager,
        checkpoint_managers,
        checkpoint_utils,
        checkpointers,
        emergency,
        errors,
        experimental,
        handlers,
        manager,
        metadata,
        multihost,
        options,
        path,
        test_utils,
        transform_utils,
        tree,
        type_handlers,
        utils,
    )
    from jaxpoint.core.checkpointers import (
        AsyncCheckpointer,
        AsyncOptions,
        Checkpointer,
        MultiprocessingOptions,
        PyTreeCheckpointer,
        StandardCheckpointer,
        StepMetadata,
        restore,
        save,
    )
    from jaxpoint.core.errors import (
        BackgroundSaveError,
        BarrierTimeoutError,
        CheckpointError,
        CheckpointExistsError,
        CheckpointNotFoundError,
        CorruptCheckpointError,
        DirectoryInUseError,
        ProcessFailureError,
        StepAlreadyExistsError,
        StepNotFoundError,
        StorageError,
        TreeMismatchError,
        UncommittedCheckpointError,
    )
    from jaxpoint.core.handlers import (
        ArrayCheckpointHandler,
        ArrayMetadata,
        ArrayRestoreArgs,
        CheckpointArgs,
        CheckpointHandler,
        CheckpointHandlerRegistry,
        CompositeCheckpointHandler,
        DefaultCheckpointHandlerRegistry,
        JaxRandomKeyCheckpointHandler,
        JsonCheckpointHandler,
        NumpyRandomKeyCheckpointHandler,
        ProtoCheckpointHandler,
        PyTreeCheckpointHandler,
        RestoreArgs,
        SaveArgs,
        SaveContext,
        SingleReplicaArrayHandler,
        SingleReplicaArrayRestoreArgs,
        StandardCheckpointHandler,
        WriteStep,
        register_with_handler,
    )
    from jaxpoint.core.inspection import (
        ItemReport,
        VerificationReport,
        describe,
        verify,
    )
    from jaxpoint.core.manager import (
        AnyPreservationPolicy,
        AnySavePolicy,
        BestN,
        CheckpointInfo,
        CheckpointManager,
        CheckpointManagerOptions,
        CompositeStepNameFormat,
        ContinuousCheckpointingPolicy,
        CustomSteps,
        DecisionContext,
        EveryNSeconds,
        EveryNSteps,
        FixedIntervalPolicy,
        InitialSavePolicy,
        LatestN,
        PreemptionCheckpointingPolicy,
        PreservationContext,
        PreservationPolicy,
        PreserveAll,
        RootMetadata,
        SaveDecisionPolicy,
        ShouldSaveFnPolicy,
        SpecificStepsPolicy,
        StandardStepNameFormat,
        StepNameFormat,
        checkpoints_iterator,
        composite_name_format,
        hold_read_lease,
        standard_name_format,
        wait_for_new_checkpoint,
    )
    from jaxpoint.core.storage import (
        Location,
        StorageOptions,
    )
    from jaxpoint.core.tree.placeholder import (
        PLACEHOLDER,
    )
    from jaxpoint.core.tree.transforms import (
        RestoreTransform,
        Transform,
        apply_transformations,
        merge_trees,
    )

__all__ = sorted([*_ORIGIN, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    module = _ORIGIN.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

