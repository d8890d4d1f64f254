"""Checkpointer: saves and restores one handler's items at a path, synchronously."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jaxpoint.core.checkpointers.gc_pause import gc_paused
from jaxpoint.core.checkpointers.legacy_forms import checkpointer_args
from jaxpoint.core.checkpointers.options import MultiprocessingOptions
from jaxpoint.core.checkpointers.save_pipeline import (
    SaveJob,
    begin_save,
    ensure_committed,
    finish_save,
)
from jaxpoint.core.checkpointers.step_metadata import StepMetadata, read_step_metadata
from jaxpoint.core.checkpointers.transfer_report import (
    log_restore,
    restored_payload,
    shardings_source,
)
from jaxpoint.core.errors import (
    CheckpointNotFoundError,
    InvalidArgumentError,
    UnregisteredArgsError,
)
from jaxpoint.core.handlers import Composite
from jaxpoint.core.handlers.registry import handler_for_args, handler_supports, is_save_args
from jaxpoint.core.storage import Location, StorageOptions
from jaxpoint.core.storage.checksums import check_checksums

PathLike = Any  # str, os.PathLike or an epath.Path


def _label(location: Location, step: int | None) -> str:
    return str(location) if step is None else f"step {step} ({location})"


def refuse_save_args_on_restore(args: Any) -> None:
    """Save args given to a restore are a mistake to name, not a type to coerce."""
    items = args.items() if isinstance(args, Composite) else [("", args)]
    for name, item in items:
        if is_save_args(item):
            where = f" for item {name!r}" if name else ""
            wanted = type(item).__name__.replace("Save", "Restore")
            raise InvalidArgumentError(
                f"Expected restore args{where}, got the save args {type(item).__name__}. To "
                f"fix, pass ocp.args.{wanted}(target) (or args=None to restore as saved)."
            )


class Checkpointer:
    """`save(path, args=...)` writes and commits before returning; `restore(path, args)`.

    >>> import jaxpoint.core as ocp, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ckpt")
    >>> with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as ckptr:
    ...     ckptr.save(path, args=ocp.args.StandardSave({"w": np.ones(3)}))
    ...     ckptr.restore(path)["w"].tolist()
    [1.0, 1.0, 1.0]
    """

    # True where the positional form `save(path, item, ...)` is this checkpointer's own
    # documented API (Orbax's StandardCheckpointer), so it is mapped without a warning.
    _positional_form_is_current: bool = False

    def __init__(self, handler: Any, *,
                 multiprocessing_options: MultiprocessingOptions | None = None,
                 storage_options: StorageOptions | None = None) -> None:
        """`storage_options`: how every path given to this checkpointer is read and written
        (None: a `Location` keeps its own, a str or os.PathLike path gets the defaults)."""
        self._handler = handler
        self._options = multiprocessing_options or MultiprocessingOptions()
        if storage_options is not None and not isinstance(storage_options, StorageOptions):
            raise InvalidArgumentError(
                f"Expected storage_options to be a StorageOptions or None, got "
                f"{type(storage_options).__name__}. To fix, pass ocp.StorageOptions(...)."
            )
        self._storage_options = storage_options

    def _location(self, directory: PathLike) -> Location:
        return Location.parse(directory, options=self._storage_options)

    @property
    def handler(self) -> Any:
        return self._handler

    @property
    def multiprocessing_options(self) -> MultiprocessingOptions:
        """Which process commits and which take part (given at construction)."""
        return self._options

    def _coerce(self, args: Any, positional: Sequence[Any], keywords: Mapping[str, Any], *,
                what: str) -> Any:
        args = checkpointer_args(self._handler, args, positional, keywords,
                                 for_save=what == "save", where=f"{type(self).__name__}.{what}",
                                 is_current_form=self._positional_form_is_current)
        if what == "restore":
            refuse_save_args_on_restore(args)
        if args is not None and not handler_supports(self._handler, args):
            try:
                owner = f"registered for {handler_for_args(args).__name__}"
            except UnregisteredArgsError:
                owner = "registered for no handler"
            raise UnregisteredArgsError(
                f"Expected {what} args for {type(self._handler).__name__}, got "
                f"{type(args).__name__}, which is {owner}. To fix, use the args of this "
                "handler (e.g. args.StandardSave for StandardCheckpointHandler), a "
                "checkpointer built for that handler, or register your args with "
                "@register_with_handler."
            )
        return args

    def _begin(self, directory: PathLike, args: Any, *, force: bool, is_async: bool,
               custom_metadata: dict[str, Any] | None, metrics: dict[str, Any] | None = None,
               step: int | None = None,
               legacy: tuple[Sequence[Any], Mapping[str, Any]] = ((), {})) -> SaveJob:
        args = self._coerce(args, *legacy, what="save")
        if args is None:
            raise UnregisteredArgsError("save() needs args, e.g. args=ocp.args.StandardSave(tree).")
        recorded = getattr(self._handler, "recorded_typestrs", None)
        typestrs = recorded(args) if recorded is not None else self._handler.typestr
        metadata = StepMetadata(item_handlers=typestrs, custom_metadata=dict(custom_metadata or {}),
                                metrics=dict(metrics or {}))
        location = self._location(directory)
        with gc_paused():  # staging builds objects per leaf (see gc_pause)
            return begin_save(self._handler, location, args, force=force,
                              options=self._options, is_async=is_async, step_metadata=metadata,
                              label=_label(location, step))

    def save(self, directory: PathLike, *legacy_args: Any, args: Any = None, force: bool = False,
             custom_metadata: dict[str, Any] | None = None,
             metrics: dict[str, Any] | None = None, step: int | None = None,
             **legacy_kwargs: Any) -> None:
        """Collective: every process calls this, in the same order. Returns once committed.

        `metrics` are recorded in `_CHECKPOINT_METADATA` (the manager passes them); `step`
        names the save in its log line. Orbax's legacy form `save(path, item,
        save_args=...)` builds the handler's save args.
        """
        with gc_paused():
            finish_save(self._begin(directory, args, force=force, is_async=False,
                                    custom_metadata=custom_metadata, metrics=metrics,
                                    step=step, legacy=(legacy_args, legacy_kwargs)))

    def restore(self, directory: PathLike, *legacy_args: Any, args: Any = None,
                step: int | None = None, **legacy_kwargs: Any) -> Any:
        """Restores the item at `directory`; without args, as it was saved.

        Without a target, arrays come back on the shardings they were saved with (where
        those devices exist here). `step` names the restore in its log line. Orbax's legacy
        form `restore(path, item=..., restore_args=..., transforms=...)` builds the
        handler's restore args.
        """
        location = self._location(directory)
        started_s = time.perf_counter()
        args = self._coerce(args, legacy_args, legacy_kwargs, what="restore")
        with gc_paused():
            ensure_committed(location)
            check_checksums(location)
            restored = self._handler.restore(location, args)
        log_restore(_label(location, step), restored_payload(restored),
                    seconds=time.perf_counter() - started_s, source=shardings_source(args))
        return restored

    def metadata(self, directory: PathLike) -> StepMetadata:
        """Step metadata plus `item_metadata` (shapes, dtypes, shardings) from the files."""
        location = self._location(directory)
        ensure_committed(location)
        try:
            step = read_step_metadata(location)
        except CheckpointNotFoundError:
            step = StepMetadata()
        return dataclasses.replace(step, item_metadata=self._handler.metadata(location))

    def wait_until_finished(self) -> None:
        """Nothing runs in the background of a sync checkpointer."""

    def check_for_errors(self) -> None:
        """Nothing runs in the background of a sync checkpointer."""

    def close(self) -> None:
        self.wait_until_finished()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
