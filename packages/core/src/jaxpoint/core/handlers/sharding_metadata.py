"""`_sharding`: each saved jax.Array's sharding, so a restore without target can reuse it.

Restoring never needs this file: a target sharding always wins, and a saved sharding
whose devices are not all present falls back to a single local device.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jaxpoint.core.errors import CheckpointError, InvalidArgumentError
from jaxpoint.core.storage import Location, read_json

SHARDING_FILE = "_sharding"


def _encode_name(param_name: str) -> str:
    return base64.urlsafe_b64encode(param_name.encode()).decode()


def decode_name(key: str) -> str:
    """The parameter name of a `_sharding` key; ValueError when it is not one."""
    try:
        return base64.urlsafe_b64decode(key.encode("ascii")).decode("utf-8")
    except (TypeError, AttributeError, UnicodeError) as error:
        raise ValueError(f"{key!r:.80} is not a base64 parameter name") from error


def describe_sharding(sharding: jax.sharding.Sharding) -> dict[str, Any] | None:
    if isinstance(sharding, jax.sharding.NamedSharding):
        mesh = sharding.mesh
        ids = np.vectorize(lambda d: {"id": int(d.id)}, otypes=[object])(mesh.devices).tolist()
        spec = [list(p) if isinstance(p, tuple) else p for p in sharding.spec]
        return {"sharding_type": "NamedSharding", "shape": list(mesh.devices.shape),
                "axis_names": list(mesh.axis_names), "partition_spec": spec,
                "device_mesh": {"mesh": ids}}
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        device: jax.Device
        (device,) = sharding.device_set
        return {"sharding_type": "SingleDeviceSharding", "device_str": str(device),
                "device_id": int(device.id)}
    return None


def write_shardings(item: Location, shardings: dict[str, jax.sharding.Sharding]) -> None:
    described, encoded = {}, {}  # trees share few shardings: describe each once
    for name, sharding in shardings.items():
        if id(sharding) not in encoded:
            info = describe_sharding(sharding)
            encoded[id(sharding)] = json.dumps(info) if info is not None else None
        if encoded[id(sharding)] is not None:
            described[_encode_name(name)] = encoded[id(sharding)]
    (item / SHARDING_FILE).write_json(described)


class SavedShardings(Mapping[str, dict[str, Any]]):
    """`_sharding` entries by parameter name, each parsed on first use."""

    def __init__(self, raw: dict[str, str]) -> None:
        self._raw = raw
        self._parsed: dict[str, dict[str, Any] | None] = {}

    def get(self, name: str, default: Any = None) -> Any:
        if name not in self._parsed:
            try:
                info = json.loads(self._raw[name]) if name in self._raw else None
            except (ValueError, TypeError, RecursionError):
                info = None
            self._parsed[name] = info if isinstance(info, dict) else None
        value = self._parsed[name]
        return default if value is None else value

    def __getitem__(self, name: str) -> dict[str, Any]:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._raw if self.get(name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def read_shardings(item: Location) -> SavedShardings:
    """Saved sharding descriptions by parameter name; empty when absent or unreadable."""
    try:
        raw = read_json(item / SHARDING_FILE)
    except CheckpointError:
        return SavedShardings({})
    decoded = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            try:
                decoded[decode_name(key)] = value
            except ValueError:
                continue
    return SavedShardings(decoded)


def sharding_from_description(info: dict[str, Any] | None) -> jax.sharding.Sharding | None:
    """Rebuilds a saved sharding when every device it names is present; else None."""
    if not info:
        return None
    devices = {d.id: d for d in jax.devices()}
    try:
        if info.get("sharding_type") == "NamedSharding":
            ids = np.vectorize(lambda e: e["id"], otypes=[int])(np.array(
                info["device_mesh"]["mesh"], dtype=object))
            if not all(int(i) in devices for i in ids.flat):
                return None
            mesh = jax.sharding.Mesh(np.vectorize(lambda i: devices[int(i)], otypes=[object])(ids),
                                     tuple(info["axis_names"]))
            spec = [tuple(p) if isinstance(p, list) else p for p in info.get("partition_spec", [])]
            return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
        if info.get("sharding_type") == "SingleDeviceSharding":
            device_id = info.get("device_id")
            if device_id is None:
                text = str(info.get("device_str", ""))
                device_id = int(text.rsplit(":", 1)[-1]) if ":" in text else None
            device = devices.get(device_id)
            if device is not None and device.process_index == jax.process_index():
                return jax.sharding.SingleDeviceSharding(device)
    except (KeyError, TypeError, ValueError):
        return None
    return None


class ShardingMetadata:
    """A saved sharding as data, readable on any host; `to_jax_sharding()` rebuilds it."""

    def to_jax_sharding(self) -> jax.sharding.Sharding:
        raise NotImplementedError

    @staticmethod
    def from_description(info: Mapping[str, Any] | None) -> ShardingMetadata | None:
        """The metadata of a `_sharding` entry; None for an absent or unknown one."""
        if not info:
            return None
        try:
            if info.get("sharding_type") == "NamedSharding":
                spec = tuple(tuple(p) if isinstance(p, list) else p
                             for p in info.get("partition_spec", []))
                mesh = info.get("device_mesh", {}).get("mesh")
                ids = None if mesh is None else tuple(
                    int(i) for i in np.vectorize(lambda e: e["id"], otypes=[int])(
                        np.array(mesh, dtype=object)).flat)
                return NamedShardingMetadata(shape=tuple(int(d) for d in info["shape"]),
                                             axis_names=tuple(info["axis_names"]),
                                             partition_spec=spec, device_ids=ids)
            if info.get("sharding_type") == "SingleDeviceSharding":
                return SingleDeviceShardingMetadata(device_str=str(info.get("device_str", "")),
                                                    device_id=info.get("device_id"))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class NamedShardingMetadata(ShardingMetadata):
    """A saved NamedSharding: mesh shape and axis names, partition spec, device ids."""

    shape: tuple[int, ...]
    axis_names: tuple[str, ...]
    partition_spec: tuple[Any, ...]
    device_ids: tuple[int, ...] | None = None

    def to_jax_sharding(self) -> jax.sharding.NamedSharding:
        """On the saved devices when all are present, else on the first devices of this job."""
        devices = {d.id: d for d in jax.devices()}
        count = math.prod(self.shape)
        if self.device_ids is not None and all(i in devices for i in self.device_ids):
            chosen = [devices[i] for i in self.device_ids]
        elif len(devices) >= count:
            chosen = jax.devices()[:count]
        else:
            raise InvalidArgumentError(
                f"Expected at least {count} devices to rebuild the saved mesh {self.shape} "
                f"{self.axis_names}, found {len(devices)}. To fix, restore onto a target "
                "with a sharding for this job's devices instead of the saved one."
            )
        mesh = jax.sharding.Mesh(np.array(chosen, dtype=object).reshape(self.shape), self.axis_names)
        return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*self.partition_spec))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SingleDeviceShardingMetadata(ShardingMetadata):
    """A saved SingleDeviceSharding: the device it was on."""

    device_str: str
    device_id: int | None = None

    def to_jax_sharding(self) -> jax.sharding.SingleDeviceSharding:
        """On the saved device when present (by id, else by name)."""
        for device in jax.devices():
            if device.id == self.device_id or (self.device_id is None and str(device) == self.device_str):
                return jax.sharding.SingleDeviceSharding(device)
        raise InvalidArgumentError(
            f"Expected device {self.device_str!r} (id {self.device_id}) of the saved sharding "
            f"among this job's devices, found {[str(d) for d in jax.devices()][:8]}. To fix, "
            "restore onto a target with a sharding for this job's devices."
        )
