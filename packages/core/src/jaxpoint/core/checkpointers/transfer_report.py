"""The figures an operator needs about each save and restore: one INFO line apiece.

Save: step or path, bytes, items, time blocked in `save()`, time to commit, throughput;
the same figures go into `_CHECKPOINT_METADATA` under `performance_metrics`, the field
Orbax uses for them. Restore: step or path, bytes, time, throughput, and whether the
shardings came from the target or from the checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
from jaxpoint.core.handlers import Composite

logger = logging.getLogger("jaxpoint.core.checkpointers")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Payload:
    """What a save or restore moves: array bytes (global, all processes) and items."""

    nbytes: int
    items: int


def _leaf_bytes(tree: Any) -> int:
    return sum(int(getattr(leaf, "nbytes", 0) or 0) for leaf in jax.tree.leaves(tree))


def _items(args_or_tree: Any) -> list[Any]:
    return list(args_or_tree.values()) if isinstance(args_or_tree, Composite) else [args_or_tree]


def save_payload(args: Any) -> Payload:
    """Bytes and item count of save args (`StandardSave(tree)`, a `Composite`, ...)."""
    items = _items(args)
    return Payload(nbytes=sum(_leaf_bytes(getattr(item, "item", None)) for item in items),
                   items=len(items))


def restored_payload(restored: Any) -> Payload:
    """Bytes and item count of what a restore returned."""
    items = _items(restored)
    return Payload(nbytes=sum(_leaf_bytes(item) for item in items), items=len(items))


def _sharding_in(tree: Any) -> bool:
    return any(isinstance(getattr(leaf, "sharding", None), jax.sharding.Sharding)
               for leaf in jax.tree.leaves(tree))


def shardings_source(args: Any) -> str:
    """'the target' when restore args carry shardings, else 'the checkpoint'."""
    for item in _items(args) if args is not None else []:
        for name in ("item", "restore_args"):
            if _sharding_in(getattr(item, name, None)):
                return "the target"
    return "the checkpoint"


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


def _rate(nbytes: int, seconds: float) -> str:
    return f"{_size(nbytes / seconds)}/s" if seconds > 0 else "n/a"


def performance_metrics(payload: Payload, *, blocked_s: float, write_s: float,
                        started_at_s: float) -> dict[str, float | int]:
    """The figures recorded in `_CHECKPOINT_METADATA`'s `performance_metrics`.

    Orbax reads only float values there and requires their names to be its own, so the
    Orbax-named figures are floats and jaxpoint's own are integers (bytes, microseconds),
    which Orbax's reader skips.
    """
    return {
        "checkpointer_blocking_start_time": float(started_at_s),
        "checkpointer_blocking_duration_secs": float(blocked_s),
        "saved_bytes": int(payload.nbytes),
        "write_duration_us": int(write_s * 1e6),
        "write_bytes_per_sec": int(payload.nbytes / write_s) if write_s > 0 else 0,
    }


def log_save(label: str, payload: Payload, *, blocked_s: float, commit_s: float) -> None:
    logger.info("Saved %s: %s in %d item(s); save() blocked %.3f s, committed after %.3f s "
                "(%s).", label, _size(payload.nbytes), payload.items, blocked_s, commit_s,
                _rate(payload.nbytes, commit_s))


def log_restore(label: str, payload: Payload, *, seconds: float, source: str) -> None:
    logger.info("Restored %s: %s in %d item(s) in %.3f s (%s); shardings from %s.", label,
                _size(payload.nbytes), payload.items, seconds, _rate(payload.nbytes, seconds),
                source)
