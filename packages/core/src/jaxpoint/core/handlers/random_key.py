"""Random-key handlers: JAX keys (typed or raw) and NumPy generator states.

Orbax's layout: the key under `<key_name>/` and a JSON item `<key_name>_metadata/`
({"typed": ...} for JAX keys, {"legacy": ...} for NumPy states). jaxpoint also records
the key's implementation so a non-default PRNG comes back as itself.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import numpy as np
from jaxpoint.core.errors import UnsupportedLeafError
from jaxpoint.core.handlers.array_handler import ArrayCheckpointHandler, ArrayRestore, ArraySave
from jaxpoint.core.handlers.base import CheckpointArgs, SaveContext, WriteStep
from jaxpoint.core.handlers.composite import Composite, CompositeCheckpointHandler
from jaxpoint.core.handlers.json_handler import JsonCheckpointHandler, JsonRestore, JsonSave
from jaxpoint.core.handlers.pytree import PyTreeCheckpointHandler, PyTreeRestore, PyTreeSave
from jaxpoint.core.handlers.registry import register_with_handler
from jaxpoint.core.storage import Location


class _KeyPairHandler:
    """A key item plus its JSON metadata item, as one composite."""

    def __init__(self, key_name: str, key_handler: Any) -> None:
        self._key_name = key_name
        self._meta_name = f"{key_name}_metadata"
        self._composite = CompositeCheckpointHandler(
            **{key_name: key_handler, self._meta_name: JsonCheckpointHandler()})

    def _stage_pair(self, directory: Location, key_args: Any, meta: dict[str, Any],
                    context: SaveContext) -> WriteStep:
        return self._composite.stage(directory, Composite(
            **{self._key_name: key_args, self._meta_name: JsonSave(meta)}), context=context)

    def finalize(self, directory: Location, *, context: SaveContext) -> None:
        self._composite.finalize(directory, context=context)

    def _restore_pair(self, directory: Location, key_args: Any) -> tuple[Any, dict[str, Any]]:
        restored = self._composite.restore(directory, Composite(
            **{self._key_name: key_args, self._meta_name: JsonRestore()}))
        return restored[self._key_name], restored[self._meta_name]

    def metadata(self, directory: Location) -> Any:
        return self._composite.metadata(directory)


class JaxRandomKeyCheckpointHandler(_KeyPairHandler):
    typestr: ClassVar[str] = "orbax.checkpoint._src.handlers.random_key_checkpoint_handler.JaxRandomKeyCheckpointHandler"

    def __init__(self, key_name: str | None = None) -> None:
        super().__init__(key_name or "jax_random_key", ArrayCheckpointHandler())

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        key = args.item
        if not isinstance(key, jax.Array):
            raise UnsupportedLeafError(
                f"Expected a jax.Array key for JaxRandomKeySave at {directory}, got "
                f"{type(key).__name__}. To fix, pass jax.random.key(...) or jax.random.PRNGKey(...)."
            )
        meta: dict[str, Any] = {"typed": False}
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            meta = {"typed": True, "impl": str(jax.random.key_impl(key))}
            key = jax.random.key_data(key)
        return self._stage_pair(directory, ArraySave(key, save_args=args.save_args), meta, context)

    def restore(self, directory: Location, args: Any | None = None) -> Any:
        data, meta = self._restore_pair(directory, ArrayRestore(
            restore_args=getattr(args, "restore_args", None)))
        if meta.get("typed"):
            return jax.random.wrap_key_data(data, impl=meta.get("impl"))
        return data


class NumpyRandomKeyCheckpointHandler(_KeyPairHandler):
    typestr: ClassVar[str] = "orbax.checkpoint._src.handlers.random_key_checkpoint_handler.NumpyRandomKeyCheckpointHandler"

    def __init__(self, key_name: str | None = None) -> None:
        super().__init__(key_name or "np_random_key", PyTreeCheckpointHandler())

    def stage(self, directory: Location, args: Any, *, context: SaveContext) -> WriteStep:
        state = args.item
        if not isinstance(state, tuple | dict):
            raise UnsupportedLeafError(
                f"Expected np.random.get_state() (a tuple) or Generator.bit_generator.state (a "
                f"dict) for NumpyRandomKeySave at {directory}, got {type(state).__name__}."
            )
        return self._stage_pair(directory, PyTreeSave(_encode_big_ints(state)),
                                {"legacy": isinstance(state, tuple)}, context)

    def restore(self, directory: Location, args: Any | None = None) -> Any:
        state, meta = self._restore_pair(directory, PyTreeRestore())
        state = _decode_big_ints(state)
        return tuple(state) if meta.get("legacy") else state


_BIG_INT_PREFIX = "jaxpoint-int:"


def _encode_big_ints(state: Any) -> Any:
    """PCG64 states hold 128-bit ints that no array dtype fits: store them as strings."""
    if isinstance(state, dict):
        return {k: _encode_big_ints(v) for k, v in state.items()}
    if isinstance(state, tuple | list):
        return type(state)(_encode_big_ints(v) for v in state)
    if isinstance(state, int) and not isinstance(state, bool) and not -2**63 <= state < 2**63:
        return f"{_BIG_INT_PREFIX}{state}"
    return state


def _decode_big_ints(state: Any) -> Any:
    if isinstance(state, dict):
        return {k: _decode_big_ints(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_decode_big_ints(v) for v in state)
    if isinstance(state, str) and state.startswith(_BIG_INT_PREFIX):
        return int(state[len(_BIG_INT_PREFIX):])
    if isinstance(state, np.ndarray) and state.ndim == 0:
        return state.item()
    return state


@register_with_handler(JaxRandomKeyCheckpointHandler, for_save=True)
@dataclasses.dataclass
class JaxRandomKeySave(CheckpointArgs):
    item: Any
    save_args: Any = None


@register_with_handler(JaxRandomKeyCheckpointHandler, for_restore=True)
@dataclasses.dataclass
class JaxRandomKeyRestore(CheckpointArgs):
    item: Any = None
    restore_args: Any = None


@register_with_handler(NumpyRandomKeyCheckpointHandler, for_save=True)
@dataclasses.dataclass
class NumpyRandomKeySave(CheckpointArgs):
    item: Any


@register_with_handler(NumpyRandomKeyCheckpointHandler, for_restore=True)
@dataclasses.dataclass
class NumpyRandomKeyRestore(CheckpointArgs):
    item: Any = None
