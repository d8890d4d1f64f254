"""The multihost API in one process without `jax.distributed`: cheap no-ops and validation.

These run inside the pytest process, which never joins a distributed job.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from jaxpoint.core.errors import (
    CheckpointError,
    InvalidArgumentError,
    ProcessFailureError,
)
from jaxpoint.core.multihost import (
    agree_on_success,
    broadcast_one_to_all,
    broadcast_one_to_some,
    is_primary_host,
    process_count,
    process_index,
    reached_preemption,
    sync_global_processes,
)
from jaxpoint.core.multihost.runtime import distributed_runtime


@pytest.fixture(autouse=True)
def _single_process() -> None:
    assert distributed_runtime() is None, "the pytest process must not join jax.distributed"


def test_roles_of_a_lone_process() -> None:
    assert process_index() == 0
    assert process_count() == 1
    assert is_primary_host(0)
    assert is_primary_host(None)


@pytest.mark.parametrize("primary_host", [1, -1])
def test_primary_host_outside_the_job_is_refused(primary_host: int) -> None:
    match = rf"primary_host in \[0, 1\) .* got {primary_host}"
    with pytest.raises(InvalidArgumentError, match=match):
        is_primary_host(primary_host)


@pytest.mark.parametrize("primary_host", ["0", True, 0.0])
def test_primary_host_of_the_wrong_type_is_refused(primary_host: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"process index \(int\) or None"):
        is_primary_host(primary_host)  # type: ignore[arg-type]


def test_barrier_is_a_no_op() -> None:
    for _ in range(3):
        sync_global_processes("step", timeout_s=0.001)
    sync_global_processes("step", processes=[0])


@pytest.mark.parametrize(
    ("processes", "match"),
    [
        ([], r"non-empty collection of indices in \[0, 1\)"),
        ([0, 1], r"invalid: \[1\]"),
        (["0"], r"invalid: \['0'\]"),
        ("0", r"collection of process indices or None"),
        (3, r"collection of process indices or None"),
    ],
)
def test_barrier_with_invalid_processes_is_refused(processes: object, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        sync_global_processes("step", processes=processes)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout_s", [0, -1.0, math.inf, math.nan, "5", True])
def test_barrier_with_invalid_timeout_is_refused(timeout_s: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"timeout_s to be a finite number of seconds"):
        sync_global_processes("step", timeout_s=timeout_s)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", None, 3])
def test_barrier_with_invalid_name_is_refused(name: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"non-empty str name for a barrier"):
        sync_global_processes(name)  # type: ignore[arg-type]


def test_broadcast_one_to_all_returns_numpy_leaves() -> None:
    received = broadcast_one_to_all({"a": [1.5, 2.5], "b": 3})
    np.testing.assert_array_equal(received["a"], np.array([1.5, 2.5]))
    assert isinstance(received["b"], np.ndarray) and received["b"] == 3


def test_broadcast_one_to_some_round_trips_through_json() -> None:
    value = {"step": 3, "pair": (1, 2), "name": "x"}
    assert broadcast_one_to_some(value, is_source=True, processes=[0]) == {
        "step": 3, "pair": [1, 2], "name": "x"
    }


def test_broadcast_one_to_some_without_a_source_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match=r"only member .* passed is_source=False"):
        broadcast_one_to_some(1, is_source=False, processes=None)


def test_broadcast_one_to_some_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(InvalidArgumentError, match=r"JSON-serialisable value .* got ndarray"):
        broadcast_one_to_some(np.zeros(2), is_source=True, processes=None)


def test_broadcast_one_to_some_refuses_a_non_bool_source_flag() -> None:
    with pytest.raises(InvalidArgumentError, match=r"is_source to be a bool .* got 1"):
        broadcast_one_to_some(1, is_source=1, processes=None)  # type: ignore[arg-type]


def test_agreement_on_success_returns() -> None:
    agree_on_success(True, name="save")


def test_agreement_on_failure_raises_chained_to_the_cause() -> None:
    cause = OSError("No space left on device")
    with pytest.raises(
        ProcessFailureError, match=r"process\(es\) \[0\] failed \(process 0: OSError: No space"
    ) as caught:
        agree_on_success(cause, name="save")
    assert caught.value.__cause__ is cause
    assert caught.value.failures == {0: "OSError: No space left on device"}
    assert isinstance(caught.value, CheckpointError)


def test_agreement_on_false_raises() -> None:
    with pytest.raises(ProcessFailureError, match=r"failed without an exception"):
        agree_on_success(False, name="save")


def test_agreement_refuses_other_outcomes() -> None:
    with pytest.raises(InvalidArgumentError, match=r"outcome to be True, False or an exception"):
        agree_on_success("ok", name="save")  # type: ignore[arg-type]


def test_preemption_refuses_negative_steps() -> None:
    with pytest.raises(InvalidArgumentError, match=r"step passed to reached_preemption to be an int >= 0, got -1"):
        reached_preemption(-1)
