"""The checkpoint manager: steps, save and keep policies, deletion, evaluator iterators."""

from jaxpoint.core.inspection.step_names import (
    CompositeStepNameFormat,
    StandardStepNameFormat,
    StepNameFormat,
    composite_name_format,
    standard_name_format,
)
from jaxpoint.core.manager.checkpoint_info import CheckpointInfo
from jaxpoint.core.manager.evaluator import (
    checkpoints_iterator,
    hold_read_lease,
    wait_for_new_checkpoint,
)
from jaxpoint.core.manager.manager import CheckpointManager
from jaxpoint.core.manager.options import CheckpointManagerOptions
from jaxpoint.core.manager.preservation import (
    AnyPreservationPolicy,
    BestN,
    CustomSteps,
    EveryNSeconds,
    EveryNSteps,
    LatestN,
    PreservationContext,
    PreservationPolicy,
    PreserveAll,
)
from jaxpoint.core.manager.root_metadata import RootMetadata
from jaxpoint.core.manager.save_decision import (
    AnySavePolicy,
    ContinuousCheckpointingPolicy,
    DecisionContext,
    FixedIntervalPolicy,
    InitialSavePolicy,
    PreemptionCheckpointingPolicy,
    SaveDecisionPolicy,
    ShouldSaveFnPolicy,
    SpecificStepsPolicy,
)

__all__ = [
    "AnyPreservationPolicy", "AnySavePolicy", "BestN", "CheckpointInfo", "CheckpointManager",
    "CheckpointManagerOptions", "CompositeStepNameFormat", "ContinuousCheckpointingPolicy",
    "CustomSteps", "DecisionContext", "EveryNSeconds", "EveryNSteps", "FixedIntervalPolicy",
    "InitialSavePolicy", "LatestN", "PreemptionCheckpointingPolicy", "PreservationContext",
    "PreservationPolicy", "PreserveAll", "RootMetadata", "SaveDecisionPolicy",
    "ShouldSaveFnPolicy", "SpecificStepsPolicy", "StandardStepNameFormat", "StepNameFormat",
    "checkpoints_iterator", "composite_name_format", "hold_read_lease", "standard_name_format",
    "wait_for_new_checkpoint",
]
