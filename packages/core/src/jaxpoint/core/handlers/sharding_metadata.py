"""`_sharding`: each saved jax.Array's sharding, so a restore without target can reuse it.

Restoring never needs this file: a target sharding always wins, and a saved sharding
whose devices are not all present falls back to a single local device.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jaxpoint.core.errors import CheckpointError
from jaxpoint.core.storage import Location, read_json

SHARDING_FILE = "_sharding"


def _encode_name(param_name: str) -> str:
    return base64.urlsafe_b64encode(param_name.encode()).decode()


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
                decoded[base64.urlsafe_b64decode(key.encode()).decode()] = value
            except (ValueError, TypeError, AttributeError):
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
