"""`ocp.checkpoint_managers`: the manager and its save-decision and preservation policies."""

from jaxpoint.core.manager import preservation as preservation_policy
from jaxpoint.core.manager import save_decision as save_decision_policy
from jaxpoint.core.manager.checkpoint_info import CheckpointInfo as PolicyCheckpointInfo
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
    "AnyPreservationPolicy", "AnySavePolicy", "BestN", "CheckpointManager",
    "CheckpointManagerOptions", "ContinuousCheckpointingPolicy", "CustomSteps", "DecisionContext",
    "EveryNSeconds", "EveryNSteps", "FixedIntervalPolicy", "InitialSavePolicy", "LatestN",
    "PolicyCheckpointInfo", "PreemptionCheckpointingPolicy", "PreservationContext",
    "PreservationPolicy", "PreserveAll", "SaveDecisionPolicy", "ShouldSaveFnPolicy",
    "SpecificStepsPolicy", "preservation_policy", "save_decision_policy",
]
