"""`ocp.type_handlers`: custom TypeHandlers are used on save and restore, replacements take effect."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec


@dataclasses.dataclass(frozen=True)
class Point:
    """A leaf type JAX does not know as a pytree node."""

    x: float
    y: float


class AsyncPointHandler(ocp.type_handlers.TypeHandler):
    """Orbax's async form: `async def serialize` writing one JSON file per leaf at info.path."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def typestr(self) -> str:
        return "Point"

    async def metadata(self, infos):
        return [{"file": info.path.name} for info in infos]

    async def serialize(self, values, infos, args=None):
        self.calls.append("serialize")
        for value, info in zip(values, infos, strict=True):
            await asyncio.to_thread(info.path.write_text, json.dumps(dataclasses.asdict(value)))
        return []

    async def deserialize(self, infos, args=None):
        self.calls.append("deserialize")
        return [Point(**json.loads(info.path.read_text())) for info in infos]

    def finalize(self, directory) -> None:
        self.calls.append(f"finalize:{directory.name}")


class FuturePointHandler(AsyncPointHandler):
    """The synchronous form: serialize returns futures the save must wait for."""

    def typestr(self) -> str:
        return "FuturePoint"

    def serialize(self, values, infos, args=None):
        pool = concurrent.futures.ThreadPoolExecutor(1)
        return [pool.submit(info.path.write_text, json.dumps(dataclasses.asdict(value)))
                for value, info in zip(values, infos, strict=True)]

    def deserialize(self, infos, args=None):
        return [Point(**json.loads(info.path.read_text())) for info in infos]


@pytest.fixture
def registry():
    with ocp.test_utils.global_type_handler_registry_context() as scoped:
        yield scoped


def test_custom_handler_round_trip_with_and_without_target(tmp_path, registry):
    handler = AsyncPointHandler()
    ocp.type_handlers.register_type_handler(Point, handler)
    assert ocp.type_handlers.has_type_handler(Point)
    assert ocp.type_handlers.get_type_handler(Point) is handler
    tree = {"p": Point(1.0, 2.0), "q": [Point(3.0, 4.0)], "w": jnp.arange(4.0)}
    checkpointer = ocp.PyTreeCheckpointer()
    checkpointer.save(tmp_path / "c", args=ocp.args.PyTreeSave(tree))
    # finalize runs before the commit, in the save's work folder, as in Orbax.
    assert handler.calls[0] == "serialize" and len(handler.calls) == 2
    assert handler.calls[1].startswith("finalize:c.orbax-checkpoint-tmp")
    saved = json.loads((tmp_path / "c" / "_METADATA").read_text())["tree_metadata"]
    assert saved["('p',)"]["value_metadata"]["value_type"] == "Point"
    assert json.loads((tmp_path / "c" / "q.0").read_text()) == {"x": 3.0, "y": 4.0}

    restored = checkpointer.restore(tmp_path / "c", args=ocp.args.PyTreeRestore(tree))
    assert restored["p"] == Point(1.0, 2.0) and restored["q"] == [Point(3.0, 4.0)]
    np.testing.assert_array_equal(restored["w"], np.arange(4.0))
    as_saved = checkpointer.restore(tmp_path / "c")
    assert as_saved["q"] == [Point(3.0, 4.0)]
    metadata = checkpointer.metadata(tmp_path / "c")
    assert metadata.item_metadata["q"][0] == {"file": "q.0"}


def test_sync_handler_returning_futures_is_waited_for(tmp_path, registry):
    ocp.type_handlers.register_type_handler(Point, FuturePointHandler())
    checkpointer = ocp.StandardCheckpointer()  # async: serialize runs in the background write
    checkpointer.save(tmp_path / "c", {"p": Point(5.0, 6.0)})
    checkpointer.wait_until_finished()
    assert json.loads((tmp_path / "c" / "p").read_text()) == {"x": 5.0, "y": 6.0}
    assert checkpointer.restore(tmp_path / "c") == {"p": Point(5.0, 6.0)}


def test_registration_conflicts_and_unregistered_restore_raise(tmp_path, registry):
    ocp.type_handlers.register_type_handler(Point, AsyncPointHandler())
    with pytest.raises(ValueError, match="pass override=True"):
        ocp.type_handlers.register_type_handler(Point, AsyncPointHandler())
    ocp.type_handlers.register_type_handler(Point, AsyncPointHandler(), override=True)
    with pytest.raises(ValueError, match="already used by"):
        ocp.type_handlers.register_type_handler(bytes, AsyncPointHandler())
    with pytest.raises(ValueError, match="Expected a TypeHandler instance"):
        ocp.type_handlers.register_type_handler(Point, object())
    ocp.PyTreeCheckpointer().save(tmp_path / "c", args=ocp.args.PyTreeSave({"p": Point(1, 2)}))
    with ocp.test_utils.global_type_handler_registry_context(
            ocp.type_handlers.create_type_handler_registry()):
        with pytest.raises(TypeError, match="value type 'Point' at tree path"):
            ocp.PyTreeCheckpointer().restore(tmp_path / "c")


def test_built_in_handlers_are_native_and_say_so(registry):
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    assert isinstance(handler, ocp.type_handlers.ArrayHandler)
    assert handler.typestr() == "jax.Array"
    assert ocp.type_handlers.get_type_handler("np.ndarray").typestr() == "np.ndarray"
    with pytest.raises(TypeError, match="saves 'jax.Array' leaves in bulk"):
        handler.serialize([], [])
    with pytest.raises(TypeError, match="Expected a registered TypeHandler for"):
        ocp.type_handlers.get_type_handler(Point)


def test_replacement_array_handler_takes_effect(tmp_path, registry):
    """A custom jax.Array handler (not a built-in subclass) writes every jax.Array leaf."""

    class NpyArrayHandler(ocp.type_handlers.TypeHandler):
        def typestr(self) -> str:
            return "jax.Array"

        def metadata(self, infos):
            return [None for _ in infos]

        def serialize(self, values, infos, args=None):
            for value, info in zip(values, infos, strict=True):
                np.save(info.path.parent / f"{info.name}.npy", np.asarray(value))

        def deserialize(self, infos, args=None):
            return [jnp.asarray(np.load(info.path.parent / f"{info.name}.npy")) for info in infos]

    ocp.type_handlers.register_type_handler(jax.Array, NpyArrayHandler(), override=True)
    ocp.PyTreeCheckpointer().save(tmp_path / "c", args=ocp.args.PyTreeSave({"w": jnp.ones(3)}))
    assert (tmp_path / "c" / "w.npy").exists()
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(
        {"w": jnp.zeros(3)}))
    np.testing.assert_array_equal(restored["w"], np.ones(3))


def test_maxtext_single_replica_registration_is_used(tmp_path, registry):
    """MaxText registers SingleReplicaArrayHandler for jax.Array, then restores with its args."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
    sharding = NamedSharding(mesh, PartitionSpec(None, "model"))
    state = {"w": jax.device_put(jnp.arange(32.0).reshape(4, 8), sharding)}
    ocp.PyTreeCheckpointer().save(tmp_path / "c", args=ocp.args.PyTreeSave(state))
    handler = ocp.type_handlers.SingleReplicaArrayHandler(
        replica_axis_index=0, broadcast_memory_limit_bytes=1024 * 1024 * 1000)
    ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)
    assert ocp.type_handlers.get_type_handler(jax.Array) is handler
    restore_args = jax.tree.map(lambda x: ocp.type_handlers.SingleReplicaArrayRestoreArgs(
        sharding=x.sharding, global_shape=x.shape, dtype=x.dtype), state)
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(
        item=state, restore_args=restore_args))
    assert restored["w"].sharding == sharding
    np.testing.assert_array_equal(restored["w"], np.arange(32.0).reshape(4, 8))
    # The registered handler's settings are the ones used: a primary replica the mesh lacks.
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.SingleReplicaArrayHandler(primary_replica_id=3),
        override=True)
    with pytest.raises(ValueError, match="Expected primary_replica_id < 2"):
        ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(
            item=state, restore_args=restore_args))
