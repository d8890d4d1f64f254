"""LocalTier in one process (8 virtual devices): saves, the step record, retention, errors.

Recovery across processes (lost folders, broadcasts, crashes) is in
test_recovery_processes.py; here one process holds every replica, so every restore reads
its own folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jaxpoint.core.emergency import LocalTier
from jaxpoint.core.errors import InvalidArgumentError, StepAlreadyExistsError, StepNotFoundError
from jaxpoint.core.inspection import verify
from jaxpoint.core.inspection.step_names import standard_name_format


@pytest.fixture(scope="module")
def mesh() -> jax.sharding.Mesh:
    return jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("replica", "model"))


def _state(mesh: jax.sharding.Mesh, step: int) -> dict[str, Any]:
    weights = np.arange(64, dtype=np.float32).reshape(4, 16) + step
    weights[0, :2] = [-0.0, np.nan]
    return {
        "weights": jax.device_put(weights, NamedSharding(mesh, P(None, "model"))),
        "nested": {"bias": jax.device_put(np.arange(8, dtype=jnp.bfloat16) * step,
                                          NamedSharding(mesh, P("model")))},
        "key": jax.device_put(jax.random.key(step, impl="rbg"), NamedSharding(mesh, P())),
    }


def _abstract(state: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        state)


def _bits(state: Any) -> list[bytes]:
    leaves = [jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
              else a for a in jax.tree.leaves(state)]
    return [np.asarray(a).tobytes() for a in leaves]


@pytest.mark.parametrize("is_async", [True, False], ids=["async", "sync"])
def test_round_trip_is_bit_exact_with_items(tmp_path: Path, mesh: jax.sharding.Mesh,
                                            is_async: bool) -> None:
    with LocalTier(tmp_path, global_mesh=mesh, enable_async_checkpointing=is_async) as tier:
        for step in (1, 2):
            tier.save(step, _state(mesh, step), items={"data": {"position": step}})
        tier.wait_until_finished()
        assert tier.local_steps() == [1, 2]
        assert tier.agree_on_restorable_step() == 2
        restored, items = tier.restore(1, _abstract(_state(mesh, 0)))
    assert items == {"data": {"position": 1}}
    assert _bits(restored) == _bits(_state(mesh, 1))
    assert restored["weights"].sharding == _state(mesh, 1)["weights"].sharding
    assert jax.random.key_impl(restored["key"]) == jax.random.key_impl(_state(mesh, 1)["key"])


def test_a_local_step_is_an_ordinary_checkpoint_with_its_record(tmp_path: Path,
                                                                mesh: jax.sharding.Mesh) -> None:
    with LocalTier(tmp_path, global_mesh=mesh, step_name_format=standard_name_format(
            step_prefix="local")) as tier:
        tier.save(7, _state(mesh, 7))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local_7"]
    assert verify(tmp_path / "local_7").arrays == 3
    record = json.loads((tmp_path / "local_7" / "_CHECKPOINT_METADATA").read_text())[
        "custom_metadata"]["jaxpoint_local_tier"]
    assert record["step"] == 7 and record["process_index"] == 0
    assert record["layout"]["shape"] == [2, 4] and record["layout"]["axis_names"] == ["replica", "model"]
    assert record["positions"] == [[r, s] for r in range(2) for s in range(4)]
    assert record["leaves"] == [["['key']", [], "key<rbg>"], ["['nested']['bias']", [8], "bfloat16"],
                                ["['weights']", [4, 16], "float32"]]


def test_max_to_keep_and_delete(tmp_path: Path, mesh: jax.sharding.Mesh) -> None:
    tier = LocalTier(tmp_path, global_mesh=mesh, max_to_keep=2)
    for step in range(5):
        tier.save(step, _state(mesh, step))
    tier.wait_until_finished()
    assert tier.local_steps() == [3, 4]
    tier.delete(4)
    tier.delete(4)  # already gone: fine
    assert tier.local_steps() == [3]
    assert tier.agree_on_restorable_step() == 3
    tier.close()


def test_saving_a_committed_step_again_raises(tmp_path: Path, mesh: jax.sharding.Mesh) -> None:
    with LocalTier(tmp_path, global_mesh=mesh) as tier:
        tier.save(3, _state(mesh, 3))
        with pytest.raises(StepAlreadyExistsError, match=r"Expected no local step 3 in .*, found "
                           r"a committed one\. To fix, save a new step or delete"):
            tier.save(3, _state(mesh, 3))


def test_no_step_and_a_missing_step(tmp_path: Path, mesh: jax.sharding.Mesh,
                                    caplog: pytest.LogCaptureFixture) -> None:
    tier = LocalTier(tmp_path / "never-written", global_mesh=mesh)
    with caplog.at_level(logging.WARNING, logger="jaxpoint.core.emergency"):
        assert tier.agree_on_restorable_step() is None
    assert "no restorable local step: no process holds any local step" in caplog.text
    with pytest.raises(StepNotFoundError, match=r"Expected local step 5 on some replica of every "
                       r"slot, but it is held by processes \[\] only \(slots \[0, 1, 2, 3\] "):
        tier.restore(5, _abstract(_state(mesh, 0)))


def test_one_replica_warns_at_construction(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    single = jax.sharding.Mesh(np.array(jax.devices()[:4]).reshape(1, 4), ("replica", "model"))
    with caplog.at_level(logging.WARNING, logger="jaxpoint.core.emergency"):
        LocalTier(tmp_path, global_mesh=single)
    assert [r.getMessage() for r in caplog.records] == [
        "LocalTier: the mesh {'replica': 1, 'model': 4} has 1 replica along axis 'replica', so a "
        "process that loses its local folder cannot be recovered from the local tier (use a "
        "persistent tier)."]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"global_mesh": "mesh"}, r"Expected global_mesh to be a jax.sharding.Mesh, got str"),
    ({"replica_axis_index": 2}, r"Expected replica_axis_index in \[0, 2\) for the mesh"),
    ({"max_to_keep": 0}, r"Expected LocalTier max_to_keep to be an int >= 1 or None, got 0"),
    ({"broadcast_memory_limit_bytes": 0}, r"Expected broadcast_memory_limit_bytes to be an int"),
    ({"timeout_s": 0}, r"Expected timeout_s > 0 seconds for LocalTier, got 0"),
    ({"enable_async_checkpointing": "yes"}, r"Expected enable_async_checkpointing to be a bool"),
    ({"enable_async_checkpointing": False, "async_options": object()},
     r"Expected async_options only with enable_async_checkpointing=True"),
])
def test_bad_construction_raises(tmp_path: Path, mesh: jax.sharding.Mesh,
                                 kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        LocalTier(tmp_path, **{"global_mesh": mesh, **kwargs})


def test_bad_saves_and_targets_raise(tmp_path: Path, mesh: jax.sharding.Mesh) -> None:
    other = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("replica", "model"))
    with LocalTier(tmp_path, global_mesh=mesh) as tier:
        with pytest.raises(InvalidArgumentError, match=r"Expected step to be an int >= 0, got -1"):
            tier.save(-1, _state(mesh, 1))
        with pytest.raises(InvalidArgumentError, match=r"Expected items to be a mapping of str"):
            tier.save(1, _state(mesh, 1), items=[1, 2])  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match=r"Expected a JSON-serialisable value for "
                           r"item 'rows', got ndarray .*To fix, convert it"):
            tier.save(1, _state(mesh, 1), items={"rows": np.ones(2)})
        with pytest.raises(InvalidArgumentError, match=r"at tree path \['weights'\] of local step 1, "
                           r"got ndarray"):
            tier.save(1, {"weights": np.ones(3)})
        with pytest.raises(InvalidArgumentError, match=r"NamedSharding over the tier's global_mesh "
                           r"at tree path \['w'\] of local step 1"):
            tier.save(1, {"w": jax.device_put(np.ones(4), NamedSharding(other, P()))})
        with pytest.raises(InvalidArgumentError, match=r"replicated along the replica axis "
                           r"'replica', but its spec P\('replica',\) shards it"):
            tier.save(1, {"w": jax.device_put(np.ones(4), NamedSharding(mesh, P("replica")))})
        assert tier.local_steps() == []
        tier.save(1, _state(mesh, 1))
        with pytest.raises(InvalidArgumentError, match=r"at tree path \['weights'\] of "
                           r"abstract_state, got ShapeDtypeStruct with sharding None"):
            tier.restore(1, {"weights": jax.ShapeDtypeStruct((4, 16), jnp.float32)})
