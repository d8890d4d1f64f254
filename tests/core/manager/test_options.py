"""CheckpointManagerOptions: validation, and the policies the flat options stand for."""

from __future__ import annotations

import datetime

import pytest
from jaxpoint.core import AsyncOptions, MultiprocessingOptions
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.manager import (
    AnyPreservationPolicy,
    AnySavePolicy,
    BestN,
    CheckpointManagerOptions,
    EveryNSeconds,
    EveryNSteps,
    FixedIntervalPolicy,
    InitialSavePolicy,
    LatestN,
    PreemptionCheckpointingPolicy,
    ShouldSaveFnPolicy,
    SpecificStepsPolicy,
    standard_name_format,
)
from jaxpoint.core.manager.options import preservation_policy_for, save_decision_policy_for


def test_defaults_save_every_step_and_keep_everything() -> None:
    options = CheckpointManagerOptions()
    assert options.enable_async_checkpointing is True
    assert save_decision_policy_for(options) == AnySavePolicy(
        [FixedIntervalPolicy(1), PreemptionCheckpointingPolicy(), InitialSavePolicy()])
    assert preservation_policy_for(options) == AnyPreservationPolicy([LatestN(None)])


def test_flat_save_options_map_onto_policies() -> None:
    options = CheckpointManagerOptions(save_interval_steps=10, save_on_steps=[3, 5])
    assert options.save_on_steps == frozenset({3, 5})
    assert save_decision_policy_for(options) == AnySavePolicy(
        [FixedIntervalPolicy(10), SpecificStepsPolicy({3, 5}), PreemptionCheckpointingPolicy(),
         InitialSavePolicy()])
    only_listed = CheckpointManagerOptions(save_interval_steps=None, save_on_steps={7})
    assert save_decision_policy_for(only_listed).policies[0] == SpecificStepsPolicy({7})


def test_should_save_fn_replaces_the_interval() -> None:
    def every_third(step: int, last: int | None) -> bool:
        return step % 3 == 0

    options = CheckpointManagerOptions(should_save_fn=every_third)
    assert save_decision_policy_for(options) == AnySavePolicy(
        [ShouldSaveFnPolicy(every_third), PreemptionCheckpointingPolicy()])


def test_flat_keep_options_map_onto_policies() -> None:
    def loss(metrics):
        return metrics["loss"]

    options = CheckpointManagerOptions(
        max_to_keep=3, keep_period=100, keep_time_interval=datetime.timedelta(minutes=2),
        best_fn=loss, best_mode="min", keep_checkpoints_without_metrics=False)
    assert preservation_policy_for(options) == AnyPreservationPolicy([
        EveryNSteps(100), EveryNSeconds(120.0),
        BestN(get_metric_fn=loss, n=3, reverse=True, keep_checkpoints_without_metrics=False)])


def test_given_policies_are_used_as_they_are() -> None:
    save, keep = SpecificStepsPolicy({1}), LatestN(2)
    options = CheckpointManagerOptions(save_decision_policy=save, preservation_policy=keep)
    assert save_decision_policy_for(options) is save
    assert preservation_policy_for(options) is keep


def test_name_format_follows_prefix_and_length() -> None:
    options = CheckpointManagerOptions(step_prefix="ckpt", step_format_fixed_length=4)
    assert options.name_format().build_name(7) == "ckpt_0007"
    custom = standard_name_format(step_prefix="x")
    assert CheckpointManagerOptions(step_name_format=custom).name_format() is custom


def test_options_are_frozen_and_keyword_only() -> None:
    options = CheckpointManagerOptions(max_to_keep=2)
    with pytest.raises(AttributeError):
        options.max_to_keep = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        CheckpointManagerOptions(2)  # type: ignore[misc]


@pytest.mark.parametrize(("options", "match"), [
    ({"save_interval_steps": 0}, r"save_interval_steps to be an int >= 1 or None, got 0"),
    ({"save_on_steps": "10"}, r"save_on_steps to be a collection of ints, got '10'"),
    ({"save_on_steps": [1, -5]}, r"step in save_on_steps to be an int >= 0, got -5"),
    ({"should_save_fn": 5}, r"should_save_fn to be callable"),
    ({"should_save_fn": lambda s, last: True, "save_on_steps": [1]},
     r"should_save_fn decides every save by itself, so it cannot be combined with \['save_on_steps'\]"),
    ({"should_save_fn": lambda s, last: True, "save_interval_steps": 5},
     r"cannot be combined with \['save_interval_steps'\]"),
    ({"save_decision_policy": FixedIntervalPolicy(2), "save_interval_steps": 5},
     r"save_decision_policy decides every save by itself"),
    ({"save_decision_policy": FixedIntervalPolicy(2), "should_save_fn": lambda s, last: True},
     r"cannot be combined with \['should_save_fn'\]"),
    ({"save_decision_policy": "every step"}, r"save_decision_policy to be an object with should_save"),
    ({"max_to_keep": 0}, r"max_to_keep to be an int >= 1 or None, got 0. To fix, keep at least one"),
    ({"keep_period": -2}, r"keep_period to be an int >= 1 or None, got -2"),
    ({"keep_time_interval": 60}, r"keep_time_interval to be a positive datetime.timedelta or None, got 60"),
    ({"keep_time_interval": datetime.timedelta(0)}, r"keep_time_interval to be a positive"),
    ({"best_fn": "loss"}, r"best_fn to be callable\(metrics\)"),
    ({"best_mode": "lowest"}, r"best_mode to be 'max' or 'min', got 'lowest'"),
    ({"preservation_policy": LatestN(2), "max_to_keep": 3},
     r"preservation_policy decides what is kept by itself, so it cannot be combined with \['max_to_keep'\]"),
    ({"preservation_policy": 3}, r"preservation_policy to be an object with should_preserve"),
    ({"step_name_format": standard_name_format(), "step_prefix": "a"},
     r"step_name_format names steps by itself"),
    ({"step_name_format": "ckpt_{step}"}, r"step_name_format to be an object with build_name"),
    ({"todelete_subdir": "7"}, r"todelete_subdir to be a folder name that is not a step name, got '7'"),
    ({"read_only": True, "cleanup_tmp_directories": True},
     r"read_only=True forbids writes, but cleanup_tmp_directories=True would delete folders"),
    ({"create": "yes"}, r"create to be a bool, got 'yes'"),
    ({"async_options": {"timeout_secs": 5}}, r"async_options to be an AsyncOptions or None"),
    ({"multiprocessing_options": None}, r"multiprocessing_options to be a MultiprocessingOptions"),
])
def test_bad_options_are_refused(options, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        CheckpointManagerOptions(**options)


def test_valid_nested_options_are_accepted() -> None:
    options = CheckpointManagerOptions(async_options=AsyncOptions(timeout_secs=5),
                                       multiprocessing_options=MultiprocessingOptions(primary_host=0),
                                       todelete_subdir="trash")
    assert options.todelete_subdir == "trash"
