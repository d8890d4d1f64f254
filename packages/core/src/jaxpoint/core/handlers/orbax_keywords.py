"""Orbax's `PyTreeCheckpointHandler` / `StandardCheckpointHandler` keywords, checked once.

Each keyword is honoured or refused: `use_ocdbt`, `use_zarr3`, `use_compression` choose
the format, `save_concurrent_gb` / `restore_concurrent_gb` bound the bytes in flight.
Keywords for machinery jaxpoint does not have are accepted only at the value that
changes nothing (their Orbax default), so copied code runs and a real request fails loudly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.handlers.type_registry import GLOBAL_TYPE_HANDLER_REGISTRY

GIB = 1024**3


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConcurrencyLimits:
    """Bytes of array data in flight at once; None keeps jaxpoint's defaults."""

    save_bytes: int | None = None
    restore_bytes: int | None = None


def _gib(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidArgumentError(
            f"Expected {name} to be a positive number of GiB or None, got {value!r}. To fix, "
            f"pass e.g. {name}=96."
        )
    return int(value * GIB)


def concurrency_limits(*, save_concurrent_gb: Any = None,
                       restore_concurrent_gb: Any = None) -> ConcurrencyLimits:
    return ConcurrencyLimits(save_bytes=_gib("save_concurrent_gb", save_concurrent_gb),
                             restore_bytes=_gib("restore_concurrent_gb", restore_concurrent_gb))


def compression_for(*, use_compression: bool | None, compression: str | None,
                    handler: str) -> str | None:
    """`use_compression` (Orbax's switch) or `compression` (jaxpoint's codec name), not both."""
    if use_compression is None:
        return compression
    if not isinstance(use_compression, bool):
        raise InvalidArgumentError(
            f"Expected use_compression=True or False for {handler}, got {use_compression!r}."
        )
    if compression is not None and (compression == "zstd") != use_compression:
        raise InvalidArgumentError(
            f"{handler} got use_compression={use_compression} and compression={compression!r}, "
            "which disagree. Expected one of them. To fix, drop one."
        )
    return "zstd" if use_compression else None


def _is_default_multiprocessing(value: Any) -> bool:
    return (getattr(value, "primary_host", 0) == 0
            and getattr(value, "active_processes", None) is None)


def refuse_unsupported(handler: str, **values: Any) -> None:
    """Raises for an Orbax keyword set to a value jaxpoint cannot honour."""
    honoured_defaults = {
        "aggregate_filename": (lambda v: v is None,
                               "jaxpoint never writes the legacy msgpack aggregate file"),
        "save_device_host_concurrent_gb": (lambda v: v is None,
                                           "device-to-host copies are not bounded separately; "
                                           "use save_concurrent_gb"),
        "memory_limit_options": (lambda v: v is None,
                                 "use save_concurrent_gb / restore_concurrent_gb"),
        "multiprocessing_options": (lambda v: v is None or _is_default_multiprocessing(v),
                                    "pass multiprocessing_options to the Checkpointer or "
                                    "CheckpointManagerOptions, which choose the primary process"),
        "type_handler_registry": (lambda v: v is None or _is_global_registry(v),
                                  "register handlers globally with "
                                  "ocp.type_handlers.register_type_handler"),
        "handler_impl": (lambda v: v is None, "jaxpoint has one pytree implementation"),
        "pytree_metadata_options": (lambda v: not getattr(v, "support_rich_types", False),
                                    "rich-type tree metadata is not written; namedtuples and "
                                    "dataclasses restore from the target's structure"),
        "array_metadata_validator": (lambda v: v is None,
                                     "array metadata is always validated on restore"),
        "enable_pinned_host_transfer": (lambda v: v in (None, True),
                                        "pinned host memory is used wherever the device has it"),
        "is_prioritized_key_fn": (lambda v: v is None,
                                  "device-to-host copies all start at once, unordered"),
    }
    for name, value in values.items():
        accepts, why = honoured_defaults[name]
        if not accepts(value):
            raise InvalidArgumentError(
                f"{handler}({name}={value!r}) is not supported here: {why}. Expected the "
                f"default. To fix, drop {name}."
            )


def _is_global_registry(value: Any) -> bool:
    return value is GLOBAL_TYPE_HANDLER_REGISTRY
