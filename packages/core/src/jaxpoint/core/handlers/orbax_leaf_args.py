"""Per-leaf args that orbax-checkpoint itself built, taken as jaxpoint's.

Flax's `flax.training.orbax_utils.save_args_from_target` / `restore_args_from_target`
(the Flax checkpointing guide's pattern) import orbax-checkpoint directly, so code that
swapped its own import still hands jaxpoint Orbax's `SaveArgs` / `RestoreArgs` /
`ArrayRestoreArgs`. They are recognised by module and class name and copied field by
field; a field jaxpoint cannot honour raises. jaxpoint never imports orbax.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.handlers.leaf_args import ArrayRestoreArgs, RestoreArgs, SaveArgs

_OURS: dict[str, type] = {"SaveArgs": SaveArgs, "RestoreArgs": RestoreArgs,
                          "ArrayRestoreArgs": ArrayRestoreArgs}


def _is_orbax(value: Any) -> bool:
    return type(value).__module__.startswith("orbax.checkpoint")


def taken_from_orbax(value: Any, *, where: str) -> Any:
    """`value` itself, or jaxpoint's equivalent of an Orbax per-leaf args object."""
    if not _is_orbax(value) or not dataclasses.is_dataclass(value):
        return value
    name = type(value).__name__
    ours = _OURS.get(name)
    if ours is None:
        raise InvalidArgumentError(
            f"Expected jaxpoint's per-leaf args at {where}, got orbax.checkpoint's {name}, "
            f"which jaxpoint cannot take over. To fix, build it from jaxpoint.core (e.g. "
            f"ocp.type_handlers.{name})."
        )
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    shard_axes = fields.pop("shard_axes", ())
    if shard_axes:
        raise InvalidArgumentError(
            f"Expected SaveArgs(shard_axes=()) at {where}, got {shard_axes!r} (from "
            "orbax.checkpoint). jaxpoint writes arrays in the chunks their sharding gives. To "
            "fix, drop shard_axes."
        )
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(ours)})
    if unknown:
        raise InvalidArgumentError(
            f"Expected orbax.checkpoint's {name} at {where} to hold only fields jaxpoint's "
            f"has, got also {unknown}. To fix, build it from jaxpoint.core instead."
        )
    return ours(**fields)
