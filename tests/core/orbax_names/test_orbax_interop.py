"""Orbax code with the import swapped, against the real orbax-checkpoint 0.12.8, both ways."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import jaxpoint.core as ocp
import numpy as np
import orbax.checkpoint as orbax_ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec


@dataclasses.dataclass(frozen=True)
class Point:
    x: float
    y: float


def _point_handler(base: type) -> type:
    """The same JSON-file TypeHandler written against either library's base class."""

    class PointHandler(base):
        def typestr(self) -> str:
            return "Point"

        async def metadata(self, infos):
            return [None for _ in infos]

        async def serialize(self, values, infos, args=None):
            for value, info in zip(values, infos, strict=True):
                info.path.write_text(json.dumps(dataclasses.asdict(value)))
            return []

        async def deserialize(self, infos, args=None):
            return [Point(**json.loads(info.path.read_text())) for info in infos]

    return PointHandler


def test_construct_restore_args_restores_an_orbax_checkpoint_onto_new_shardings(tmp_path):
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 4), ("data", "model"))
    saved = {"w": jax.device_put(jnp.arange(64.0).reshape(8, 8),
                                 NamedSharding(mesh, PartitionSpec("data"))), "step": 7}
    with orbax_ocp.PyTreeCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "c", args=orbax_ocp.args.PyTreeSave(saved))
    abstract = {"w": jax.ShapeDtypeStruct((8, 8), jnp.float32), "step": 0}
    shardings = {"w": NamedSharding(mesh, PartitionSpec(None, "model")), "step": None}
    ours = ocp.checkpoint_utils.construct_restore_args(abstract, shardings)
    theirs = orbax_ocp.checkpoint_utils.construct_restore_args(abstract, shardings)
    assert (ours["w"].sharding, ours["w"].global_shape) == \
        (theirs["w"].sharding, theirs["w"].global_shape)
    restored = ocp.PyTreeCheckpointer().restore(tmp_path / "c", args=ocp.args.PyTreeRestore(
        abstract, restore_args=ours))
    assert restored["w"].sharding == shardings["w"] and restored["step"] == 7
    np.testing.assert_array_equal(restored["w"], np.arange(64.0).reshape(8, 8))


def test_a_custom_type_handler_checkpoint_moves_both_ways(tmp_path):
    tree = {"origin": Point(0.5, -1.0), "w": np.arange(3.0)}
    with ocp.test_utils.global_type_handler_registry_context(), \
            orbax_ocp.test_utils.global_type_handler_registry_context():
        ocp.type_handlers.register_type_handler(Point, _point_handler(ocp.type_handlers.TypeHandler)())
        orbax_ocp.type_handlers.register_type_handler(
            Point, _point_handler(orbax_ocp.type_handlers.TypeHandler)())
        ocp.PyTreeCheckpointer().save(tmp_path / "ours", args=ocp.args.PyTreeSave(tree))
        with orbax_ocp.PyTreeCheckpointer() as checkpointer:
            by_orbax = checkpointer.restore(tmp_path / "ours", args=orbax_ocp.args.PyTreeRestore(
                tree, restore_args={"origin": orbax_ocp.RestoreArgs(restore_type=Point),
                                    "w": orbax_ocp.RestoreArgs(restore_type=np.ndarray)}))
            checkpointer.save(tmp_path / "theirs", args=orbax_ocp.args.PyTreeSave(tree))
        by_us = ocp.PyTreeCheckpointer().restore(tmp_path / "theirs")
    assert by_orbax["origin"] == Point(0.5, -1.0) and by_us["origin"] == Point(0.5, -1.0)
    np.testing.assert_array_equal(by_us["w"], np.arange(3.0))
