"""Orbax's per-leaf `TypeHandler` protocol, and the built-in handlers jaxpoint runs natively.

A `TypeHandler` saves and restores leaves of one type inside a tree item. Call sequence
(the pytree handler makes every call, on every process, in this order):
  1. `serialize(values, infos, args)` during the save's write step, once per handler with
     all of its leaves; it may be `async def` and may return futures (objects with
     `.result()`) or awaitables, which are all waited for before the save commits.
  2. `finalize(parent_dir)` on the primary process, after every process wrote.
  3. `deserialize(infos, args)` on restore, once per handler, returning one value per info;
     `metadata(infos)` when the item's metadata is read.
`ParamInfo.path` (= `parent_dir / name`) is where a handler keeps a leaf's files.

jaxpoint writes arrays, scalars and strings in bulk, not leaf by leaf: `ArrayHandler`,
`NumpyHandler`, `ScalarHandler` and `StringHandler` mark those leaves for the native path
(their `serialize` / `deserialize` are not called and raise if called directly). A
subclass that overrides `serialize` and `deserialize` is a custom handler and is called.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from etils import epath
from jaxpoint.core.errors import UnsupportedLeafError


@dataclasses.dataclass(kw_only=True)
class ParamInfo:
    """Where and how one leaf is stored: its parameter `name` under `parent_dir`.

    The fields after `keypath` are Orbax's and are filled from the item's format where
    jaxpoint knows them; handlers may ignore them.
    """

    name: str
    parent_dir: epath.Path
    keypath: tuple[Any, ...] | None = None
    skip_deserialize: bool = False
    is_ocdbt_checkpoint: bool | None = None
    use_compression: bool | None = True
    use_zarr3: bool | None = False
    ocdbt_target_data_file_size: int | None = None
    ts_context: Any = None
    value_typestr: str | None = None
    enable_pinned_host_transfer: bool = False
    raise_array_data_missing_error: bool = True
    write_shape: tuple[int, ...] | None = None
    byte_limiter: Any = None
    device_host_byte_limiter: Any = None
    is_prioritized_key_fn: Callable[..., Any] | None = None

    @property
    def path(self) -> epath.Path:
        return epath.Path(self.parent_dir) / self.name


class TypeHandler(abc.ABC):
    """Reads and writes the leaves of one type; see the module docstring for the call order."""

    @abc.abstractmethod
    def typestr(self) -> str:
        """The `value_type` recorded in `_METADATA`; must not collide with other handlers'."""

    @abc.abstractmethod
    def metadata(self, infos: Sequence[ParamInfo]) -> Any:
        """Metadata for each stored leaf (may be async)."""

    @abc.abstractmethod
    def serialize(self, values: Sequence[Any], infos: Sequence[ParamInfo],
                  args: Sequence[Any] | None = None) -> Any:
        """Writes `values`; returns futures or awaitables to wait for, or nothing (may be async)."""

    @abc.abstractmethod
    def deserialize(self, infos: Sequence[ParamInfo], args: Sequence[Any] | None = None) -> Any:
        """Reads one value per info (may be async)."""

    def finalize(self, directory: epath.Path) -> None:
        """Runs on the primary process once every process has written. Default: nothing."""
        return None


class NativeTypeHandler(TypeHandler):
    """A leaf type jaxpoint saves and restores itself, in bulk with the rest of the tree."""

    TYPESTR: ClassVar[str] = ""

    def typestr(self) -> str:
        return self.TYPESTR

    def _not_callable(self, method: str) -> UnsupportedLeafError:
        return UnsupportedLeafError(
            f"{type(self).__name__}.{method}() was called directly, but jaxpoint saves "
            f"'{self.TYPESTR}' leaves in bulk inside the pytree handler. Expected it to be "
            "used only through register_type_handler. To fix, save the tree with "
            "PyTreeSave/StandardSave, or subclass TypeHandler (not a built-in handler) and "
            "implement serialize/deserialize yourself."
        )

    def metadata(self, infos: Sequence[ParamInfo]) -> Any:
        raise self._not_callable("metadata")

    def serialize(self, values: Sequence[Any], infos: Sequence[ParamInfo],
                  args: Sequence[Any] | None = None) -> Any:
        raise self._not_callable("serialize")

    def deserialize(self, infos: Sequence[ParamInfo], args: Sequence[Any] | None = None) -> Any:
        raise self._not_callable("deserialize")


class ArrayHandler(NativeTypeHandler):
    """jax.Array leaves (random key arrays included): sharded, each shard written once."""

    TYPESTR = "jax.Array"


class NumpyHandler(NativeTypeHandler):
    """np.ndarray leaves, written by the primary process."""

    TYPESTR = "np.ndarray"


class ScalarHandler(NativeTypeHandler):
    """Python and NumPy scalars, written by the primary process as 0-d arrays."""

    TYPESTR = "scalar"


class StringHandler(NativeTypeHandler):
    """str leaves, kept together in the item's `_strings.json`."""

    TYPESTR = "string"


def is_native(handler: TypeHandler) -> bool:
    """True when jaxpoint's bulk path serves `handler`'s leaves (it overrides no protocol method)."""
    cls = type(handler)
    return isinstance(handler, NativeTypeHandler) and all(
        getattr(cls, method) is getattr(NativeTypeHandler, method)
        for method in ("serialize", "deserialize"))
