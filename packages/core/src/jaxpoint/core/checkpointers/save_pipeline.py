"""The steps of one save, shared by the sync and async checkpointers.

  begin (caller's thread, collective): check the target, primary opens the work folder,
        barrier, handler stages the item; an async `save()` returns after this.
  finish (collective, maybe in a background thread): every process writes, all agree
        that every write succeeded, the primary finalizes, writes `_CHECKPOINT_METADATA`
        and commits, and a last barrier makes the commit visible to everyone at once.
A failure on any process fails the save on all of them and commits nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any

from jaxpoint.core import multihost
from jaxpoint.core.checkpointers.memory_release import release_freed_memory
from jaxpoint.core.checkpointers.options import MultiprocessingOptions
from jaxpoint.core.checkpointers.step_metadata import StepMetadata, write_step_metadata
from jaxpoint.core.checkpointers.transfer_report import (
    Payload,
    log_save,
    performance_metrics,
    save_payload,
)
from jaxpoint.core.errors import (
    BarrierTimeoutError,
    CheckpointError,
    CheckpointExistsError,
    CheckpointNotFoundError,
    SaveAbandonedError,
    UncommittedCheckpointError,
)
from jaxpoint.core.handlers import SaveContext, WriteStep
from jaxpoint.core.storage import (
    TMP_SUFFIX,
    CommitProtocol,
    Location,
    commit_protocol_for,
    is_tmp_name,
    parse_tmp_name,
)
from jaxpoint.core.storage.checksums import write_checksums

logger = logging.getLogger(__name__)


@dataclasses.dataclass(kw_only=True)
class SaveJob:
    final: Location
    work: Location
    protocol: CommitProtocol
    write: WriteStep
    handler: Any
    context: SaveContext
    options: MultiprocessingOptions
    step_metadata: StepMetadata
    barrier_name: str
    replace: bool
    payload: Payload
    label: str
    started_s: float = dataclasses.field(default_factory=time.perf_counter)
    started_at_s: float = dataclasses.field(default_factory=time.time)
    # Time the caller spent in save(); set once save() returns.
    blocked_s: float | None = None
    # Set to stop the save before its commit (a second Ctrl-C at exit).
    abandoned: threading.Event = dataclasses.field(default_factory=threading.Event)


def _processes(options: MultiprocessingOptions) -> Any:
    return options.active_processes


def ensure_absent_or_forced(final: Location, *, force: bool) -> None:
    protocol = commit_protocol_for(final)
    if final.is_file():
        raise CheckpointExistsError(
            f"Expected a folder path to save into, found a file at {final}. To fix, remove "
            "the file or choose another path."
        )
    if protocol.is_committed(final) and not force:
        raise CheckpointExistsError(
            f"A checkpoint already exists at {final}. To fix, pass force=True to overwrite "
            "it, or save to a new path."
        )


def begin_save(handler: Any, final: Location, args: Any, *, force: bool,
               options: MultiprocessingOptions, is_async: bool,
               step_metadata: StepMetadata, label: str) -> SaveJob:
    """Collective: every process calls this, in the same order."""
    started_s = time.perf_counter()
    ensure_absent_or_forced(final, force=force)
    protocol = commit_protocol_for(final)
    is_primary = multihost.is_primary_host(options.primary_host)
    barrier_name = options.barrier_sync_key_prefix or "jaxpoint-save"
    work_name = None
    if is_primary:
        final.parent.make_folder()
        work_name = protocol.begin(final).name
    if options.primary_host is not None:
        # The work folder's name is unique to this attempt (see storage/commit.py): the
        # primary sends it, which also tells everyone that the folder is ready.
        work_name = multihost.broadcast_one_to_some(
            work_name, is_source=is_primary, processes=_processes(options),
            timeout_s=options.barrier_timeout_s, name=f"{barrier_name}/work-folder")
    if not isinstance(work_name, str):
        raise CheckpointError(
            f"Expected the name of the work folder of {final} from the primary process, got "
            f"{work_name!r}. To fix, make one process the primary "
            "(MultiprocessingOptions(primary_host=...)) or pass primary_host=None."
        )
    work = final.parent / work_name
    context = SaveContext(process_index=multihost.process_index(), is_primary=is_primary,
                          is_async=is_async)
    write = handler.stage(work, args, context=context)
    logger.debug("%s staged after %.3f s", label, time.perf_counter() - started_s)
    init = dataclasses.replace(step_metadata, init_timestamp_nsecs=time.time_ns())
    return SaveJob(final=final, work=work, protocol=protocol, write=write, handler=handler,
                   context=context, options=options, step_metadata=init,
                   barrier_name=barrier_name, replace=force, payload=save_payload(args),
                   label=label, started_s=started_s)


def finish_save(job: SaveJob) -> None:
    """Collective: every process calls this, in the same order.

    When every process agrees that the save failed (a full disk, say), the primary removes
    the uncommitted work folder so that the failure does not keep holding the space.
    """
    try:
        _write_and_commit(job)
        committed_s = time.perf_counter() - job.started_s
        log_save(job.label, job.payload, commit_s=committed_s,
                 blocked_s=committed_s if job.blocked_s is None else job.blocked_s)
    except BarrierTimeoutError:
        raise  # other processes may still be writing there
    except Exception:
        _discard_work(job)
        raise
    finally:
        release_freed_memory()  # keeps RSS flat over many saves (see memory_release)


def _discard_work(job: SaveJob) -> None:
    if not job.context.is_primary:
        return
    try:
        if job.work == job.final and job.protocol.is_committed(job.final):
            return
        job.work.remove()
    except (CheckpointError, OSError) as error:  # the next save of this name removes it
        logger.warning("Could not remove the failed save's folder %s: %s", job.work, error)


def _write_and_commit(job: SaveJob) -> None:
    options = job.options
    outcome: bool | BaseException = True
    try:
        job.write()
        logger.debug("%s written after %.3f s", job.label, time.perf_counter() - job.started_s)
        if job.abandoned.is_set():
            raise SaveAbandonedError(
                f"The save of {job.label} was abandoned before its commit (second Ctrl-C); "
                f"it stays uncommitted at {job.work}, and earlier checkpoints are intact.")
    except Exception as error:  # reported to every process below, then re-raised
        outcome = error
    _agree(outcome, f"{job.barrier_name}/written", options)
    if job.context.is_primary:
        outcome = True
        try:
            job.handler.finalize(job.work, context=job.context)
            write_s = time.perf_counter() - job.started_s
            metrics = performance_metrics(
                job.payload, write_s=write_s, started_at_s=job.started_at_s,
                blocked_s=write_s if job.blocked_s is None else job.blocked_s)
            write_step_metadata(job.work, dataclasses.replace(
                job.step_metadata, commit_timestamp_nsecs=time.time_ns(),
                performance_metrics={**job.step_metadata.performance_metrics, **metrics}))
            write_checksums(job.work)
            job.protocol.commit(job.work, job.final, replace=job.replace)
        except Exception as error:
            outcome = error
    _agree(outcome, f"{job.barrier_name}/committed", options)


def _agree(outcome: bool | BaseException, name: str, options: MultiprocessingOptions) -> None:
    if options.primary_host is None or multihost.process_count() == 1:
        if isinstance(outcome, BaseException):
            raise outcome
        return
    multihost.agree_on_success(outcome, name=name, processes=_processes(options),
                               timeout_s=options.barrier_timeout_s)
    if isinstance(outcome, BaseException):
        raise outcome


def ensure_committed(final: Location) -> None:
    """Raises unless `final` holds a committed checkpoint."""
    if is_tmp_name(final.name):
        raise UncommittedCheckpointError(
            f"{final} is an unfinished save (its name has {TMP_SUFFIX}); it was never "
            "committed and cannot be restored. To fix, restore a committed checkpoint."
        )
    if not final.exists():
        pending = [name for name in final.parent.list_names()
                   if (tmp := parse_tmp_name(name)) is not None and tmp.base == final.name]
        hint = (f" An unfinished save of it exists at {final.parent / pending[0]}; it never "
                "committed." if pending else "")
        raise CheckpointNotFoundError(
            f"Expected a checkpoint at {final}, found nothing.{hint} To fix, check the path "
            "(list the directory to see what exists)."
        )
    if final.is_file():
        raise CheckpointNotFoundError(
            f"Expected a checkpoint folder at {final}, found a file. To fix, pass the folder."
        )
    if not commit_protocol_for(final).is_committed(final):
        raise UncommittedCheckpointError(
            f"{final} has no commit marker, so its save never finished. It cannot be "
            "restored. To fix, restore an earlier checkpoint."
        )
