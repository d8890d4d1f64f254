"""Replicas and slots of a mesh: which device holds which copy of which part of the state.

Along the replica axis the mesh holds full copies of the state (replicas); every position
of the other axes (a slot) holds the same shards in every replica. A step can be rebuilt
when, for every slot, some replica's device there belongs to a process that still holds
the step: that device's shards are the slot's source, and the others receive them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any, TypeGuard

import jax
import numpy as np


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshLayout:
    """What a local step records of its mesh, compared before anything is restored.

    Equal layouts mean the same devices (by id) at the same positions, so a process's
    saved shards are the ones its devices need now.
    """

    axis_names: tuple[str, ...]
    shape: tuple[int, ...]
    replica_axis_index: int
    device_ids: tuple[int, ...]  # the mesh's device ids, row-major

    @classmethod
    def of(cls, mesh: jax.sharding.Mesh, replica_axis_index: int) -> MeshLayout:
        return cls(axis_names=tuple(str(n) for n in mesh.axis_names),
                   shape=tuple(int(n) for n in mesh.devices.shape),
                   replica_axis_index=replica_axis_index,
                   device_ids=tuple(int(d.id) for d in mesh.devices.flat))

    def to_json(self) -> dict[str, Any]:
        return {"axis_names": list(self.axis_names), "shape": list(self.shape),
                "replica_axis_index": self.replica_axis_index,
                "device_ids": list(self.device_ids)}

    @classmethod
    def from_json(cls, stored: dict[str, Any]) -> MeshLayout:
        return cls(axis_names=tuple(stored["axis_names"]), shape=tuple(stored["shape"]),
                   replica_axis_index=int(stored["replica_axis_index"]),
                   device_ids=tuple(stored["device_ids"]))

    def describe(self) -> str:
        axes = ", ".join(f"{n}={s}" for n, s in zip(self.axis_names, self.shape, strict=True))
        return (f"mesh ({axes}) with replica axis {self.axis_names[self.replica_axis_index]!r} "
                f"({self.shape[self.replica_axis_index]} replicas)")

    def difference(self, other: MeshLayout) -> str | None:
        """Why `other` (the current layout) cannot restore what `self` saved; None if it can."""
        if (self.axis_names, self.shape, self.replica_axis_index) != (
                other.axis_names, other.shape, other.replica_axis_index):
            return f"saved on {self.describe()}, but the current one is {other.describe()}"
        if self.device_ids != other.device_ids:
            return (f"saved on {self.describe()} with devices {list(self.device_ids)}, but the "
                    f"current mesh orders its devices {list(other.device_ids)}")
        return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplicaGeometry:
    """The (replica, slot) of every device of a mesh and the processes that own them."""

    mesh: jax.sharding.Mesh
    replica_axis_index: int

    @property
    def axis_name(self) -> str:
        return str(self.mesh.axis_names[self.replica_axis_index])

    @property
    def replica_count(self) -> int:
        return int(self.mesh.devices.shape[self.replica_axis_index])

    @property
    def slot_count(self) -> int:
        return int(self.mesh.devices.size) // self.replica_count

    @property
    def layout(self) -> MeshLayout:
        return MeshLayout.of(self.mesh, self.replica_axis_index)

    def places(self, sharding: object) -> TypeGuard[jax.sharding.NamedSharding]:
        """Whether `sharding` is a NamedSharding over this mesh's devices, in its order."""
        return (isinstance(sharding, jax.sharding.NamedSharding)
                and sharding.mesh.devices.shape == self.mesh.devices.shape
                and bool((sharding.mesh.devices == self.mesh.devices).all()))

    def _by_replica(self) -> np.ndarray:
        """Device ids as a (replica, slot) matrix."""
        ids = np.vectorize(lambda d: d.id, otypes=[int])(self.mesh.devices)
        return np.moveaxis(ids, self.replica_axis_index, 0).reshape(self.replica_count, -1)

    def positions(self) -> dict[int, tuple[int, int]]:
        """The (replica, slot) of every device of the mesh, by device id."""
        ids = self._by_replica()
        return {int(ids[r, s]): (r, s)
                for r in range(self.replica_count) for s in range(self.slot_count)}

    def process_of(self) -> dict[tuple[int, int], int]:
        """The owning process of every (replica, slot)."""
        process = {d.id: d.process_index for d in self.mesh.devices.flat}
        ids = self._by_replica()
        return {(r, s): process[int(ids[r, s])]
                for r in range(self.replica_count) for s in range(self.slot_count)}

    @property
    def members(self) -> tuple[int, ...]:
        return tuple(sorted({d.process_index for d in self.mesh.devices.flat}))

    def sources(self, holders: Collection[int]) -> dict[int, int] | None:
        """For every slot, the lowest replica whose device there is on a holding process.

        None when some slot has no such replica: the step cannot be rebuilt.
        """
        owners = self.process_of()
        chosen: dict[int, int] = {}
        for slot in range(self.slot_count):
            replicas = [r for r in range(self.replica_count) if owners[r, slot] in holders]
            if not replicas:
                return None
            chosen[slot] = replicas[0]
        return chosen

    def readers(self, sources: dict[int, int]) -> tuple[int, ...]:
        """The processes owning the source device of some slot (see `sources`)."""
        owners = self.process_of()
        return tuple(sorted({owners[replica, slot] for slot, replica in sources.items()}))

    def missing_slots(self, holders: Collection[int]) -> list[int]:
        owners = self.process_of()
        return [s for s in range(self.slot_count)
                if not any(owners[r, s] in holders for r in range(self.replica_count))]
