"""The two libraries the interop tests run in both directions, and how each one writes.

A *writer case* is `(library, variant)`: `library` writes (`orbax`: the real
orbax-checkpoint 0.12.8; `jaxpoint`: the library under test) and the other library reads.
Both are driven through the same `args=` API, so every writer below is written once
against a module `lib` and runs on either side. Orbax's variants (zarr2 + zstd by
default, zarr3, the legacy layout without OCDBT, small chunks, async) keep the suite
covering orbax's writer wherever it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from core.interop.interop_support import ocp, orbax_ocp, read_json

LIBRARIES: dict[str, Any] = {"orbax": orbax_ocp, "jaxpoint": ocp}
BOTH_WAYS = ("orbax", "jaxpoint")  # the writing library; the other one reads


def reader_of(writer: str) -> Any:
    return LIBRARIES["jaxpoint" if writer == "orbax" else "orbax"]


# ---------------------------------------------------------------- how each library writes


def _standard_checkpointer(lib: Any, path: Path, tree: Any) -> None:
    with lib.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, tree)
        checkpointer.wait_until_finished()


def _standard_args(lib: Any, path: Path, tree: Any) -> None:
    with lib.Checkpointer(lib.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=lib.args.StandardSave(tree))


def _standard_async(lib: Any, path: Path, tree: Any) -> None:
    with lib.AsyncCheckpointer(lib.StandardCheckpointHandler()) as checkpointer:
        checkpointer.save(path, args=lib.args.StandardSave(tree))
        checkpointer.wait_until_finished()


def _pytree(**handler_options: Any) -> Callable[[Any, Path, Any], None]:
    def write(lib: Any, path: Path, tree: Any) -> None:
        with lib.Checkpointer(lib.PyTreeCheckpointHandler(**handler_options)) as checkpointer:
            checkpointer.save(path, args=lib.args.PyTreeSave(tree))

    return write


def _small_chunks(lib: Any, path: Path, tree: Any) -> None:
    # 64-byte chunks: every array of more than 16 floats spans several chunks.
    save_args = jax.tree.map(lambda _: lib.SaveArgs(chunk_byte_size=64), tree)
    with lib.Checkpointer(lib.PyTreeCheckpointHandler(use_zarr3=True)) as checkpointer:
        checkpointer.save(path, args=lib.args.PyTreeSave(tree, save_args=save_args))


@dataclasses.dataclass(frozen=True)
class Writer:
    write: Callable[[Any, Path, Any], None]
    is_pytree: bool  # read back with PyTreeCheckpointer, else StandardCheckpointer
    layout: tuple[bool, bool] | None = None  # (use_ocdbt, use_zarr3) _METADATA must record


WRITERS: dict[str, Writer] = {
    "standard": Writer(_standard_checkpointer, False),
    "standard_args": Writer(_standard_args, False),
    "async_standard": Writer(_standard_async, False),
    "pytree": Writer(_pytree(), True),
    "pytree_zarr3_ocdbt": Writer(_pytree(use_zarr3=True), True, (True, True)),
    "pytree_zarr2_no_ocdbt": Writer(_pytree(use_ocdbt=False), True, (False, False)),
    "pytree_zarr3_no_ocdbt": Writer(_pytree(use_ocdbt=False, use_zarr3=True), True, (False, True)),
    "pytree_zarr3_small_chunks": Writer(_small_chunks, True, (True, True)),
}
ORBAX_VARIANTS = [("orbax", name) for name in (
    "standard", "async_standard", "pytree_zarr3_ocdbt", "pytree_zarr2_no_ocdbt",
    "pytree_zarr3_no_ocdbt", "pytree_zarr3_small_chunks")]
JAXPOINT_STANDARD = [("jaxpoint", name) for name in ("standard", "standard_args", "async_standard")]


def case_id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


def write_case(case: tuple[str, str], path: Path, tree: Any) -> None:
    library, name = case
    writer = WRITERS[name]
    writer.write(LIBRARIES[library], path, tree)
    if library == "orbax" and name == "standard":
        # orbax's default: zarr2 with zstd inside OCDBT.
        assert (read_json(path / "_METADATA")["use_zarr3"], (path / "manifest.ocdbt").is_file()) == (
            False, True)
    if writer.layout is not None:  # the checkpoint must really be the variant it is named after
        use_ocdbt, use_zarr3 = writer.layout
        metadata = read_json(path / "_METADATA")
        assert (metadata["use_ocdbt"], metadata["use_zarr3"]) == writer.layout
        assert (path / "manifest.ocdbt").is_file() == use_ocdbt
        if not use_ocdbt:
            assert (path / "f32" / ("zarr.json" if use_zarr3 else ".zarray")).is_file()


def checkpointer_for(case: tuple[str, str]) -> Any:
    lib = reader_of(case[0])
    return lib.PyTreeCheckpointer() if WRITERS[case[1]].is_pytree else lib.StandardCheckpointer()
