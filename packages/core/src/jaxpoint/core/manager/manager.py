"""CheckpointManager: numbered steps in one directory, saved, kept and deleted by policy.

The directory layout is Orbax's (see FORMAT.md), so Orbax's CheckpointManager lists and
restores what this one writes, and the other way round. A save goes through a
CompositeCheckpointHandler and the (async) checkpointer; once the step has committed, the
preservation policy's rejects are deleted, by the primary process only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from jaxpoint.core import multihost
from jaxpoint.core.checkpointers import AsyncCheckpointer, Checkpointer, StepMetadata, exit_guard
from jaxpoint.core.checkpointers.background_failure import BackgroundFailure
from jaxpoint.core.errors import (
    BackgroundSaveError,
    CheckpointError,
    CheckpointExistsError,
    InvalidArgumentError,
    ReadOnlyError,
    StepAlreadyExistsError,
    StepNotFoundError,
)
from jaxpoint.core.handlers import Composite, DefaultCheckpointHandlerRegistry
from jaxpoint.core.inspection import DamagedStep, list_steps
from jaxpoint.core.manager import leases, legacy_forms, root_metadata
from jaxpoint.core.manager.checkpoint_info import CheckpointInfo, as_step, utc_now
from jaxpoint.core.manager.deletion import StepDeleter
from jaxpoint.core.manager.items import (
    DEFAULT_ITEM,
    ItemLayout,
    handlers_from_registry,
    plain_metrics,
)
from jaxpoint.core.manager.options import (
    CheckpointManagerOptions,
    preservation_policy_for,
    refuse_orbax_logger,
    save_decision_policy_for,
)
from jaxpoint.core.manager.preemption_watch import PreemptionWatch, preemption_source_for
from jaxpoint.core.manager.preservation import PreservationContext, ranked_by_metric
from jaxpoint.core.manager.save_decision import DecisionContext
from jaxpoint.core.manager.step_catalog import StepCatalog, read_step_metrics
from jaxpoint.core.manager.writer_lock import WriterLock, commit_conflict, lost_race_error
from jaxpoint.core.storage import Location, commit_protocol_for

logger = logging.getLogger(__name__)


class CheckpointManager:
    """Saves, lists, restores and prunes the steps of a training run in `directory`.

    Collective: every process calls the constructor, `save`, `should_save`, `restore`,
    `delete`, `reload`, `wait_until_finished` and `close`, in the same order.

    >>> import numpy as np, tempfile
    >>> from jaxpoint.core import args
    >>> from jaxpoint.core.manager import CheckpointManager, CheckpointManagerOptions
    >>> options = CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    >>> with CheckpointManager(tempfile.mkdtemp(), options=options) as manager:
    ...     for step in range(3):
    ...         _ = manager.save(step, args=args.StandardSave({"w": np.ones(2) * step}))
    ...     manager.all_steps(), manager.restore()["w"].tolist()
    ([1, 2], [2.0, 2.0])
    """

    def __init__(self, directory: str | os.PathLike[str] | Location,
                 checkpointers: Any = None, options: CheckpointManagerOptions | None = None, *,
                 metadata: Mapping[str, Any] | None = None,
                 item_names: Sequence[str] | None = None, item_handlers: Any = None,
                 preemption_source: multihost.PreemptionSource | None = None,
                 handler_registry: DefaultCheckpointHandlerRegistry | None = None,
                 logger: None = None) -> None:
        refuse_orbax_logger(logger)
        item_handlers = handlers_from_registry(handler_registry, item_names=item_names,
                                               item_handlers=item_handlers,
                                               checkpointers=checkpointers)
        # `checkpointers`: Orbax's legacy argument, or jaxpoint's options given positionally.
        built = legacy_forms.resolve_construction(checkpointers, options, item_names=item_names,
                                                  item_handlers=item_handlers)
        options, item_handlers = built.options, built.item_handlers
        self._options = options
        self._root = Location.parse(directory)
        self._name_format = options.name_format()
        self._mp = options.multiprocessing_options
        self._is_primary = multihost.is_primary_host(self._mp.primary_host)
        self._layout = ItemLayout(item_names=item_names, item_handlers=item_handlers)
        self._save_policy = save_decision_policy_for(options)
        self._keep_policy = preservation_policy_for(options)
        source = preemption_source_for(preemption_source, handle_sigterm=options.handle_sigterm)
        self._writer_lock = WriterLock(self._root)
        self._prepare_directory(metadata)
        self._checkpointer = self._make_checkpointer()
        self._deleter = StepDeleter(self._root, todelete_subdir=options.todelete_subdir,
                                    background=options.enable_background_delete,
                                    is_active=self._is_primary and not options.read_only)
        self._catalog = StepCatalog(self._root, self._name_format)
        self._catalog.reload()
        self._finalize_thread: threading.Thread | None = None
        self._in_flight_step: int | None = None
        self._failure = BackgroundFailure()
        self._is_closed = False
        self._has_warned_about_metrics = False
        self._preemption = PreemptionWatch(
            source, is_enabled=options.handle_sigterm and not options.read_only,
            wait_for_commit=self.wait_until_finished)
        exit_guard.guard(self)

    # ------------------------------------------------------------------ set-up

    def _sync(self, name: str) -> None:
        if self._mp.primary_host is not None:
            multihost.sync_global_processes(f"manager/{name}", processes=self._mp.active_processes,
                                            timeout_s=self._mp.barrier_timeout_s)

    def _prepare_directory(self, metadata: Mapping[str, Any] | None) -> None:
        options, root = self._options, self._root
        if root.is_file():
            raise InvalidArgumentError(
                f"Expected a folder for the checkpoint directory, found a file at {root}. To "
                "fix, remove the file or pass another directory."
            )
        if options.todelete_subdir is not None and not root.has_atomic_rename:
            raise InvalidArgumentError(
                f"Expected storage that can rename folders for todelete_subdir="
                f"{options.todelete_subdir!r}, but {root} has no atomic rename. To fix, drop "
                "todelete_subdir (steps are then deleted)."
            )
        custom = root_metadata.validated_custom_metadata(metadata, what="metadata=")
        if not options.read_only:
            if not options.create and not root.exists():
                raise InvalidArgumentError(
                    f"Expected the checkpoint directory {root} to exist because create=False, "
                    "found nothing. To fix, create it or pass create=True."
                )
            if self._is_primary:
                self._prepare_as_primary(custom if metadata is not None else None)
        elif metadata is not None and options.save_root_metadata and \
                root_metadata.needs_write(root, custom):
            raise ReadOnlyError(
                f"This manager is read-only, but metadata= asks to write root metadata at "
                f"{root}, which has none. To fix, drop metadata= or open the directory "
                "with read_only=False."
            )
        self._sync("directory-ready")

    def _prepare_as_primary(self, custom: dict[str, Any] | None) -> None:
        root = self._root
        root.make_folder()
        if not self._options.allow_concurrent_writers:
            self._writer_lock.acquire()  # before cleanup: it removes unfinished saves
        try:
            if self._options.cleanup_tmp_directories:
                for name in list_steps(root, name_format=self._name_format).unfinished:
                    logger.info("Removing %s, left by a save that never finished.", root / name)
                    (root / name).remove()
            leases.remove_expired(root)
            if custom is not None and self._options.save_root_metadata and \
                    root_metadata.needs_write(root, custom):
                root_metadata.write_root_metadata(root, custom)
        except BaseException:
            self._writer_lock.release()  # this manager never opened
            raise

    def _make_checkpointer(self) -> Checkpointer:
        if self._options.enable_async_checkpointing:
            return AsyncCheckpointer(self._layout.handler,
                                     async_options=self._options.async_options,
                                     multiprocessing_options=self._mp)
        return Checkpointer(self._layout.handler, multiprocessing_options=self._mp)

    # ------------------------------------------------------------------ listing

    @property
    def directory(self) -> Location:
        """The root directory of the managed steps."""
        return self._root

    def all_steps(self, read: bool = False) -> list[int]:
        """Every kept step, in increasing order; `read=True` reloads from storage first."""
        if read:
            self.reload()
        return self._catalog.steps()

    def latest_step(self) -> int | None:
        """The largest kept step, or None when there is none."""
        steps = self._catalog.steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The step with the best metrics by `best_fn` / `best_mode` (ties: the later step).

        Without `best_fn` this is `latest_step()`; None when no step has metrics.
        """
        best_fn = self._options.best_fn
        if best_fn is None:
            return self.latest_step()
        ranked = ranked_by_metric(self._catalog.infos(), best_fn,
                                  reverse=self._options.best_mode == "min")
        return ranked[-1].step if ranked else None

    def damaged_steps(self) -> list[DamagedStep]:
        """Entries named like steps that are not readable, committed steps (as of the last
        load): empty or partial folders, garbage `_CHECKPOINT_METADATA`, files, symlink
        loops. They are left out of every listing and restore, and never deleted by
        jaxpoint: inspect them, then repair, move or delete them by hand."""
        return self._catalog.damaged()

    def reload(self) -> None:
        """Re-reads the steps from storage, e.g. after another process changed them."""
        self._catalog.reload(exclude=self._deleter.pending_steps())

    def _folder(self, step: int) -> Location:
        return self._root / self._catalog.name_of(step)

    def _is_on_disk(self, step: int) -> bool:
        """True when `step` is committed in storage (perhaps by another process)."""
        return commit_protocol_for(self._root).is_committed(self._folder(step))

    def _existing_step(self, step: Any) -> int:
        step = as_step(step)
        if step == self._in_flight_step:
            self.wait_until_finished()
        if step not in self._catalog and not self._is_on_disk(step):
            raise StepNotFoundError(
                f"Expected step {step} in {self._root}, found only steps "
                f"{self._catalog.steps()}. To fix, pick one of those (or call reload() if "
                "another process saved it)."
            )
        return step

    # ------------------------------------------------------------------ saving

    def _refuse_if_read_only(self, action: str) -> None:
        if self._options.read_only:
            raise ReadOnlyError(
                f"Cannot {action}: the manager of {self._root} was opened with "
                "read_only=True. To fix, open it with read_only=False to write."
            )

    def reached_preemption(self, step: int) -> bool:
        """Collective: every process calls this, in the same order.

        Whether the job is being preempted (see `multihost.reached_preemption`): when True,
        save this step (`save` does so regardless of intervals) and leave the loop. A loop
        that never asks is stopped after the preemption checkpoint (see preemption_watch).
        False on a read-only manager and with `handle_sigterm=False`.
        """
        return self._preemption.asked_by_loop(as_step(step))

    def should_save(self, step: int) -> bool:
        """Collective: every process calls this, in the same order.

        Whether `save(step)` would write: False for steps not after the latest one and on
        a read-only manager; otherwise the save-decision policy decides.
        """
        step = as_step(step)
        self._preemption.stop_if_ignored(step)
        return self._decide(step)[0]

    def _decide(self, step: int) -> tuple[bool, bool]:
        """(whether to save `step`, whether it is for a preemption)."""
        if self._options.read_only:
            return False, False
        latest = self.latest_step()
        if latest is not None and step <= latest:
            return False, False
        for_preemption = self._preemption.calls_for_save(step)
        context = DecisionContext(is_saving_in_progress=self.is_saving_in_progress(),
                                  reached_preemption=for_preemption,
                                  multiprocessing_options=self._mp)
        current = CheckpointInfo(step=step, time=utc_now())
        should = bool(self._save_policy.should_save(current, self._catalog.infos(),
                                                    context=context))
        return should, for_preemption and should

    def save(self, step: int, items: Any = None, save_kwargs: Any = None, *, args: Any = None,
             metrics: Mapping[str, Any] | None = None, force: bool = False,
             custom_metadata: Mapping[str, Any] | None = None) -> bool:
        """Collective: every process calls this, in the same order.

        Saves `args` as step `step` when the save-decision policy (or `force=True`) says
        so; returns whether it saved. Asynchronous by default: returns once the state is
        staged. Raises StepAlreadyExistsError for a step that exists (delete it first).
        `items` / `save_kwargs` are Orbax's legacy form (see `legacy_forms`). With
        `best_fn`, a step saved without metrics is not ranked and is kept or deleted by
        `keep_checkpoints_without_metrics`, as in Orbax.
        """
        self._refuse_if_read_only(f"save step {step!r}")
        step = as_step(step)
        self._preemption.stop_if_ignored(step)
        self.check_for_errors()
        args = legacy_forms.save_args(self._layout, items, save_kwargs, args, step=step)
        metrics = plain_metrics(metrics, step=step)
        if self._options.best_fn is not None and metrics is None and \
                not self._has_warned_about_metrics:
            self._has_warned_about_metrics = True
            logger.warning("Step %d of %s is saved without metrics although best_fn is set: such "
                           "steps are not ranked, and keep_checkpoints_without_metrics=%s decides "
                           "whether they are kept (logged once per manager).", step, self._root,
                           self._options.keep_checkpoints_without_metrics)
        composite = self._layout.save_args(args, metrics, step=step)
        custom = root_metadata.validated_custom_metadata(custom_metadata, what="custom_metadata")
        damaged = [entry for entry in self._catalog.damaged() if entry.step == step]
        if damaged:
            raise StepAlreadyExistsError(
                f"Cannot save step {step}: {self._root / damaged[0].name} is named like it but "
                f"{damaged[0].reason}. To fix, inspect that entry and move or delete it, or "
                "save another step."
            )
        if step in self._catalog or self._is_on_disk(step):
            if step not in self._catalog:
                self.reload()  # another process saved it: list it
            raise StepAlreadyExistsError(
                f"Step {step} already exists at {self._folder(step)}. To fix, save a new step, "
                f"or call delete({step}) first to replace it."
            )
        should, for_preemption = self._decide(step)
        if not force and not should:
            return False
        self.wait_until_finished()
        try:
            self._checkpointer.save(self._folder(step), args=composite, custom_metadata=custom,
                                    metrics=metrics, step=step)
        except CheckpointExistsError as error:  # another writer committed it first
            self.reload()  # lists the winner's step
            raise lost_race_error(step, self._folder(step)) from error
        self._preemption.saved(step, for_preemption=for_preemption)
        self._catalog.add(CheckpointInfo(step=step, time=utc_now(), metrics=metrics))
        doomed = self._catalog.remove(self._steps_to_delete())
        if isinstance(self._checkpointer, AsyncCheckpointer):
            self._in_flight_step = step
            self._finalize_thread = threading.Thread(
                target=self._finalize, args=(step, doomed), daemon=True,
                name=f"jaxpoint-manager-finalize:{step}")
            self._finalize_thread.start()
        else:
            self._after_commit(doomed)
        return True

    def _steps_to_delete(self) -> list[int]:
        infos = self._catalog.infos()
        flags = list(self._keep_policy.should_preserve(infos, context=PreservationContext()))
        if len(flags) != len(infos):
            raise InvalidArgumentError(
                f"Expected the preservation policy to return {len(infos)} flags, one per "
                f"checkpoint, got {len(flags)}. To fix the policy, return one bool per checkpoint."
            )
        return [info.step for info, keep in zip(infos, flags, strict=True) if not keep]

    def _after_commit(self, doomed: dict[int, str]) -> None:
        self._deleter.delete(doomed)
        self._deleter.retry_deferred()

    def _finalize(self, step: int, doomed: dict[int, str]) -> None:
        try:
            self._checkpointer.wait_until_finished()
        except BaseException as error:  # kept for the caller's next call
            if commit_conflict(error) is not None:
                self._failure.store(lost_race_error(step, self._folder(step)), cause=error)
                self.reload()
                return
            self._failure.store(BackgroundSaveError(
                f"The asynchronous save of step {step} under {self._root} failed: "
                f"{type(error).__name__}: {error}. It was not committed and older steps were "
                "kept. To fix, see the cause below, then save again."), cause=error)
            try:
                self.reload()  # forget the failed step; the steps it doomed were kept
            except BaseException as reload_error:  # storage still failing: drop just the step
                logger.warning("Could not re-list %s after a failed save: %s", self._root,
                               reload_error)
                self._catalog.remove([step])
            return
        try:
            self._after_commit(doomed)
        except BaseException as error:
            self._failure.store(error)

    # ------------------------------------------------------------------ background work

    def pending_save(self) -> str | None:
        """The save in flight, for logs ("step 10 (/ckpt/10)"), or None."""
        step = self._in_flight_step
        if step is None or not self.is_saving_in_progress():
            return None
        return f"step {step} ({self._folder(step)})"

    def abandon_pending_save(self) -> None:
        """Makes the save in flight stop before its commit; it stays uncommitted."""
        if isinstance(self._checkpointer, AsyncCheckpointer):
            self._checkpointer.abandon_pending_save()

    def is_saving_in_progress(self) -> bool:
        """True while an asynchronous save (or the deletions after it) is running."""
        thread = self._finalize_thread
        return thread is not None and thread.is_alive()

    def check_for_errors(self) -> None:
        """Raises, once, the failure of a background save or deletion."""
        self._failure.raise_once()
        self._deleter.check_for_errors()

    def wait_until_finished(self) -> None:
        """Blocks until the asynchronous save in flight has committed; raises if it failed."""
        thread = self._finalize_thread
        if thread is not None:
            thread.join()
            self._finalize_thread = None
        self._in_flight_step = None
        self.check_for_errors()

    def close(self) -> None:
        """Collective: every process calls this, in the same order.

        Waits for the save in flight and for every queued deletion, then releases the
        background threads. Idempotent.
        """
        if self._is_closed:
            return
        self._is_closed = True
        exit_guard.unguard(self)
        self._preemption.close()
        try:
            exit_guard.wait_or_abandon(self, self.wait_until_finished)
        finally:
            try:
                self._deleter.close()
                self._checkpointer.close()
            finally:
                self._writer_lock.release()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def restore(self, step: int | None = None, items: Any = None, restore_kwargs: Any = None,
                *, args: Any = None) -> Any:
        """Collective: every process calls this, in the same order.

        Restores step `step` (the latest when None). Without args, every item comes back
        as saved, its handler looked up from `_CHECKPOINT_METADATA`. `items` /
        `restore_kwargs` are Orbax's legacy form (see `legacy_forms`).
        """
        if step is None:
            step = self.latest_step()
            if step is None:
                raise StepNotFoundError(
                    f"Expected a step to restore in {self._root}, found none. To fix, save "
                    "first, or check the directory and step_prefix / step_format_fixed_length."
                )
        step = self._existing_step(step)
        folder = self._folder(step)
        args = legacy_forms.restore_args(self._layout, items, restore_kwargs, args, step=step,
                                         folder=folder)
        try:
            composite = self._layout.restore_args(args, folder, step=step)
            restored = self._checkpointer.restore(folder, args=composite, step=step)
        except (CheckpointError, OSError) as error:
            if self._is_on_disk(step):
                raise
            raise StepNotFoundError(
                f"Step {step} at {folder} was deleted while it was being read (by a "
                f"manager's retention policy or delete()); the read failed with: {error}. To "
                "fix, hold the step while reading it: `with hold_read_lease(directory, step):` "
                "or iterate with checkpoints_iterator(directory), which leases each step."
            ) from error
        return self._layout.unwrap(restored, step=step)

    def metrics(self, step: int) -> dict[str, Any] | None:
        """The metrics saved with `step`, or None when it has none."""
        return read_step_metrics(self._folder(self._existing_step(step)))

    def item_metadata(self, step: int) -> Any:
        """Shapes, dtypes and shardings of the items of `step`, read from files only."""
        return self._step_metadata(step).item_metadata

    def metadata(self, step: int | None = None) -> StepMetadata | root_metadata.RootMetadata:
        """Root metadata (`metadata=` of the first run) when `step` is None, else the step's."""
        if step is None:
            return root_metadata.read_root_metadata(self._root)
        return self._step_metadata(step)

    def _step_metadata(self, step: int) -> StepMetadata:
        step = self._existing_step(step)
        folder = self._folder(step)
        self._layout.restore_args(None, folder, step=step)  # settles the item mode
        stored = self._checkpointer.metadata(folder)
        items = stored.item_metadata or {}
        if self._layout.is_default:
            items = items.get(DEFAULT_ITEM)
        else:
            items = Composite(**items)
        return dataclasses.replace(stored, item_metadata=items,
                                   metrics=read_step_metrics(folder, stored) or {})

    # ------------------------------------------------------------------ deleting

    def delete(self, step: int) -> None:
        """Collective: every process calls this, in the same order.

        Deletes step `step` (by the primary; in the background with
        enable_background_delete). A step another process is reading is deleted once
        its read lease ends.
        """
        self._refuse_if_read_only(f"delete step {step!r}")
        step = self._existing_step(step)
        name = self._catalog.name_of(step)
        self._catalog.remove([step])
        self._deleter.delete({step: name})
        self._sync("deleted-step")
