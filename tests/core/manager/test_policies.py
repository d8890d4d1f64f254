"""Save-decision and preservation policies on their own, and as orbax's policies decide."""

from __future__ import annotations

import datetime

import pytest
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.manager import (
    AnyPreservationPolicy,
    AnySavePolicy,
    BestN,
    CheckpointInfo,
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
    PreserveAll,
    ShouldSaveFnPolicy,
    SpecificStepsPolicy,
)
from orbax.checkpoint import checkpoint_manager as orbax_manager
from orbax.checkpoint import checkpoint_managers as orbax_policies

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
NO_CONTEXT = DecisionContext()
KEEP_CONTEXT = PreservationContext()


def info(step: int, *, seconds: float = 0.0, loss: float | None = None) -> CheckpointInfo:
    metrics = None if loss is None else {"loss": loss}
    return CheckpointInfo(step=step, time=T0 + datetime.timedelta(seconds=seconds),
                          metrics=metrics)


def decide(policy, step: int, previous: list[CheckpointInfo], *, context=NO_CONTEXT,
           seconds: float = 0.0) -> bool:
    return policy.should_save(info(step, seconds=seconds), previous, context=context)


def kept(policy, checkpoints: list[CheckpointInfo]) -> list[int]:
    flags = policy.should_preserve(checkpoints, context=KEEP_CONTEXT)
    return [c.step for c, keep in zip(checkpoints, flags, strict=True) if keep]


# ---------------------------------------------------------------- save decisions


def test_fixed_interval_saves_multiples() -> None:
    policy = FixedIntervalPolicy(5)
    assert [s for s in range(12) if decide(policy, s, [])] == [0, 5, 10]
    assert FixedIntervalPolicy(interval=5) == policy


def test_specific_steps_saves_exactly_those() -> None:
    policy = SpecificStepsPolicy([3, 7])
    assert [s for s in range(10) if decide(policy, s, [])] == [3, 7]


def test_preemption_policy_follows_the_context() -> None:
    policy = PreemptionCheckpointingPolicy()
    assert not decide(policy, 3, [])
    assert decide(policy, 3, [], context=DecisionContext(reached_preemption=True))


def test_initial_save_only_into_an_empty_run() -> None:
    policy = InitialSavePolicy()
    assert decide(policy, 7, [])
    assert not decide(policy, 8, [info(7)])


def test_continuous_waits_for_the_save_in_flight_and_the_minimum_interval() -> None:
    policy = ContinuousCheckpointingPolicy(minimum_interval_secs=10)
    busy = DecisionContext(is_saving_in_progress=True)
    assert decide(policy, 1, [])
    assert not decide(policy, 1, [], context=busy)
    assert not decide(policy, 2, [info(1)], seconds=9.5)
    assert decide(policy, 2, [info(1)], seconds=10)
    assert decide(ContinuousCheckpointingPolicy(), 2, [info(1)])


def test_should_save_fn_gets_the_step_and_the_last_saved_step() -> None:
    calls = []
    policy = ShouldSaveFnPolicy(lambda step, last: calls.append((step, last)) or step - (last or 0) >= 4)
    assert decide(policy, 4, [])
    assert not decide(policy, 6, [info(4)])
    assert calls == [(4, None), (6, 4)]


def test_any_save_policy_saves_when_one_says_so() -> None:
    policy = AnySavePolicy([FixedIntervalPolicy(10), SpecificStepsPolicy({3})])
    assert [s for s in range(12) if decide(policy, s, [info(0)])] == [0, 3, 10]


@pytest.mark.parametrize(("make", "match"), [
    (lambda: FixedIntervalPolicy(0), "Expected FixedIntervalPolicy.interval to be an int >= 1, got 0"),
    (lambda: FixedIntervalPolicy(2.5), "Expected FixedIntervalPolicy.interval to be an int >= 1"),
    (lambda: SpecificStepsPolicy("12"), "Expected steps to be a collection of ints, got '12'"),
    (lambda: SpecificStepsPolicy([1, -2]), "step in SpecificStepsPolicy.steps to be an int >= 0, got -2"),
    (lambda: ContinuousCheckpointingPolicy(minimum_interval_secs=-1), "minimum_interval_secs to be a number >= 0"),
    (lambda: ShouldSaveFnPolicy(3), "Expected should_save_fn to be callable"),
    (lambda: AnySavePolicy([FixedIntervalPolicy(1), "often"]), "with a should_save method, got 'often'"),
])
def test_bad_save_policies_are_refused(make, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        make()


# ---------------------------------------------------------------- preservation


def test_latest_n_keeps_the_newest() -> None:
    checkpoints = [info(s) for s in range(5)]
    assert kept(LatestN(2), checkpoints) == [3, 4]
    assert kept(LatestN(), checkpoints) == [0, 1, 2, 3, 4]
    assert kept(LatestN(9), checkpoints) == [0, 1, 2, 3, 4]
    assert kept(PreserveAll(), checkpoints) == [0, 1, 2, 3, 4]


def test_every_n_steps_keeps_multiples() -> None:
    assert kept(EveryNSteps(4), [info(s) for s in range(10)]) == [0, 4, 8]


def test_every_n_seconds_keeps_one_per_interval() -> None:
    checkpoints = [info(s, seconds=t) for s, t in enumerate([0, 30, 59, 61, 100, 125])]
    assert kept(EveryNSeconds(60), checkpoints) == [0, 3, 5]


def test_custom_steps_keeps_those() -> None:
    assert kept(CustomSteps([1, 3]), [info(s) for s in range(5)]) == [1, 3]


def test_best_n_keeps_the_best_and_those_without_metrics() -> None:
    checkpoints = [info(0, loss=0.9), info(1), info(2, loss=0.1), info(3, loss=0.5), info(4, loss=0.7)]
    smallest = BestN(get_metric_fn=lambda m: m["loss"], n=2, reverse=True)
    assert kept(smallest, checkpoints) == [1, 2, 3]
    largest = BestN(get_metric_fn=lambda m: m["loss"], n=2, keep_checkpoints_without_metrics=False)
    assert kept(largest, checkpoints) == [0, 4]
    assert kept(BestN(get_metric_fn=lambda m: m["loss"], n=0), checkpoints) == [1]
    assert kept(BestN(get_metric_fn=lambda m: m["loss"]), checkpoints) == [0, 1, 2, 3, 4]


def test_best_n_names_the_step_whose_metrics_best_fn_cannot_read() -> None:
    policy = BestN(get_metric_fn=lambda m: m["accuracy"], n=1)
    with pytest.raises(InvalidArgumentError, match=r"metrics of step 0 .* KeyError"):
        kept(policy, [info(0, loss=0.1), info(1, loss=0.2)])


def test_any_preservation_keeps_the_union() -> None:
    policy = AnyPreservationPolicy([LatestN(1), EveryNSteps(3)])
    assert kept(policy, [info(s) for s in range(8)]) == [0, 3, 6, 7]


def test_any_preservation_refuses_a_policy_with_the_wrong_number_of_flags() -> None:
    class Short:
        def should_preserve(self, checkpoints, *, context):
            return [True]

    with pytest.raises(InvalidArgumentError, match="return one flag per checkpoint .3., got 1"):
        kept(AnyPreservationPolicy([Short()]), [info(s) for s in range(3)])


@pytest.mark.parametrize(("make", "match"), [
    (lambda: LatestN(-1), "Expected LatestN.n to be an int >= 0, got -1"),
    (lambda: EveryNSteps(0), "Expected EveryNSteps.interval_steps to be an int >= 1, got 0"),
    (lambda: EveryNSeconds(0), "Expected EveryNSeconds.interval_secs to be a number > 0, got 0"),
    (lambda: BestN(get_metric_fn="loss"), "Expected BestN.get_metric_fn to be callable"),
    (lambda: BestN(get_metric_fn=len, n=-3), "Expected BestN.n to be an int >= 0, got -3"),
    (lambda: CustomSteps([1.5]), "step in CustomSteps.steps to be an int >= 0"),
    (lambda: AnyPreservationPolicy([LatestN(1), 3]), "with a should_preserve method, got 3"),
])
def test_bad_preservation_policies_are_refused(make, match) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        make()


# ---------------------------------------------------------------- parity with orbax


def _orbax_infos(checkpoints: list[CheckpointInfo]) -> list:
    return [orbax_manager.CheckpointInfo(step=c.step, time=c.time, metrics=c.metrics)
            for c in checkpoints]


PARITY_CASES = [
    (lambda: LatestN(3), lambda: orbax_policies.LatestN(n=3)),
    (lambda: EveryNSteps(4), lambda: orbax_policies.EveryNSteps(interval_steps=4)),
    (lambda: EveryNSeconds(60), lambda: orbax_policies.EveryNSeconds(interval_secs=60)),
    (lambda: CustomSteps([2, 5]), lambda: orbax_policies.CustomSteps(steps=[2, 5])),
    (lambda: BestN(get_metric_fn=lambda m: m["loss"], n=3, reverse=True),
     lambda: orbax_policies.BestN(get_metric_fn=lambda m: m["loss"], n=3, reverse=True)),
    (lambda: BestN(get_metric_fn=lambda m: m["loss"], n=2, keep_checkpoints_without_metrics=False),
     lambda: orbax_policies.BestN(get_metric_fn=lambda m: m["loss"], n=2,
                                  keep_checkpoints_without_metrics=False)),
]


@pytest.mark.parametrize("case", range(len(PARITY_CASES)))
def test_preservation_matches_orbax(case: int) -> None:
    ours, theirs = PARITY_CASES[case][0](), PARITY_CASES[case][1]()
    losses = [0.5, None, 0.2, 0.9, 0.2, 0.4, None, 0.1, 0.7, 0.3]
    checkpoints = [info(s, seconds=s * 25.0, loss=loss) for s, loss in enumerate(losses)]
    expected = theirs.should_preserve(_orbax_infos(checkpoints),
                                      context=orbax_policies.PreservationContext())
    assert list(ours.should_preserve(checkpoints, context=KEEP_CONTEXT)) == list(expected)
