"""Leaves served by a registered custom `TypeHandler`: grouped per handler, called in bulk.

This is the one place the pytree handler dispatches to user handlers: staging sets the
custom leaves aside (`CustomLeaf`), the write step calls `serialize_custom`, finalize
calls `finalize_custom`, and a restore takes its values from `deserialize_custom` for
the leaves whose recorded `value_type` (or requested `restore_type`) names a custom handler.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import inspect
from collections.abc import Sequence
from typing import Any

from etils import epath
from jaxpoint.core.errors import CorruptCheckpointError
from jaxpoint.core.handlers.type_handler import ParamInfo, TypeHandler
from jaxpoint.core.handlers.type_registry import GLOBAL_TYPE_HANDLER_REGISTRY
from jaxpoint.core.storage import Location
from jaxpoint.core.tree.keys import TreePath


@dataclasses.dataclass(frozen=True, kw_only=True)
class CustomLeaf:
    """One leaf set aside for its custom handler at staging."""

    path: TreePath
    value: Any
    args: Any
    handler: TypeHandler


def custom_handler_for_leaf(leaf: Any) -> TypeHandler | None:
    """The registered non-native handler for this leaf's type, if any (cached per type)."""
    return GLOBAL_TYPE_HANDLER_REGISTRY.custom_handler_for(type(leaf))


def custom_handler_for_restore(value_type: str, args: Any) -> TypeHandler | None:
    """The custom handler a restore uses: the requested `restore_type`'s, else the recorded one."""
    restore_type = getattr(args, "restore_type", None)
    if isinstance(restore_type, type):
        handler = GLOBAL_TYPE_HANDLER_REGISTRY.custom_handler_for(restore_type)
        if handler is not None:
            return handler
    return GLOBAL_TYPE_HANDLER_REGISTRY.custom_handler_for_typestr(value_type)


def _info(item: Location, path: TreePath, **fields: Any) -> ParamInfo:
    return ParamInfo(name=path.param_name, parent_dir=epath.Path(str(item)), keypath=path.keys,
                     **fields)


async def _settle(result: Any) -> Any:
    """Waits for what a handler returned: a coroutine, then any futures or awaitables in it."""
    if inspect.isawaitable(result):
        result = await result
    return result


async def _wait_all(results: Sequence[Any]) -> None:
    for result in results:
        for item in await _settle(result) or ():
            if inspect.isawaitable(item):
                await item
            elif callable(getattr(item, "result", None)):
                await asyncio.to_thread(item.result)


def _run(coroutine: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Called from inside an event loop (a notebook): run on a thread with its own loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _groups(leaves: Sequence[Any], handler_of: Any) -> dict[int, tuple[TypeHandler, list[int]]]:
    groups: dict[int, tuple[TypeHandler, list[int]]] = {}
    for index, leaf in enumerate(leaves):
        handler = handler_of(leaf)
        groups.setdefault(id(handler), (handler, []))[1].append(index)
    return groups


def serialize_custom(item: Location, leaves: Sequence[CustomLeaf], *, use_ocdbt: bool,
                     use_zarr3: bool, use_compression: bool) -> None:
    """Calls each custom handler's `serialize` once with all its leaves and waits for it."""
    if not leaves:
        return
    calls = []
    for handler, indices in _groups(leaves, lambda leaf: leaf.handler).values():
        chosen = [leaves[i] for i in indices]
        infos = [_info(item, leaf.path, use_zarr3=use_zarr3, use_compression=use_compression,
                       is_ocdbt_checkpoint=use_ocdbt, value_typestr=handler.typestr())
                 for leaf in chosen]
        args = [leaf.args for leaf in chosen]
        calls.append((handler, [leaf.value for leaf in chosen], infos, args))

    async def run() -> None:
        await _wait_all([h.serialize(values, infos, args) for h, values, infos, args in calls])

    _run(run())


def finalize_custom(item: Location, handlers: Sequence[TypeHandler]) -> None:
    """Runs `finalize` of the custom handlers that wrote leaves of this item."""
    for handler in handlers:
        handler.finalize(epath.Path(str(item)))


def deserialize_custom(item: Location, requests: Sequence[tuple[TreePath, TypeHandler, Any]],
                       *, use_ocdbt: bool, use_zarr3: bool) -> list[Any]:
    """Values for `(path, handler, restore args)` requests, one `deserialize` per handler."""
    values: list[Any] = [None] * len(requests)
    calls = []
    for handler, indices in _groups(requests, lambda request: request[1]).values():
        infos = [_info(item, requests[i][0], is_ocdbt_checkpoint=use_ocdbt, use_zarr3=use_zarr3,
                       value_typestr=handler.typestr()) for i in indices]
        calls.append((handler, indices, infos, [requests[i][2] for i in indices]))

    async def run() -> list[Any]:
        return [await _settle(h.deserialize(infos, args)) for h, _, infos, args in calls]

    for (handler, indices, _, _), restored in zip(calls, _run(run()), strict=True):
        restored = list(restored)
        if len(restored) != len(indices):
            raise CorruptCheckpointError(
                f"Expected {type(handler).__name__}.deserialize to return {len(indices)} values "
                f"for {item}, got {len(restored)}. To fix the handler, return one value per "
                "ParamInfo, in order."
            )
        for index, value in zip(indices, restored, strict=True):
            values[index] = value
    return values


def describe_custom(item: Location, requests: Sequence[tuple[TreePath, TypeHandler]],
                    *, use_ocdbt: bool, use_zarr3: bool) -> list[Any]:
    """Each custom leaf's metadata, from its handler's `metadata`."""
    values: list[Any] = [None] * len(requests)
    calls = []
    for handler, indices in _groups(requests, lambda request: request[1]).values():
        infos = [_info(item, requests[i][0], is_ocdbt_checkpoint=use_ocdbt, use_zarr3=use_zarr3,
                       value_typestr=handler.typestr()) for i in indices]
        calls.append((handler, indices, infos))

    async def run() -> list[Any]:
        return [await _settle(h.metadata(infos)) for h, _, infos in calls]

    for (_, indices, _), described in zip(calls, _run(run()), strict=True):
        for index, value in zip(indices, list(described), strict=True):
            values[index] = value
    return values
