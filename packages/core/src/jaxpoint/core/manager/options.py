"""CheckpointManagerOptions: Orbax's flat options, validated, and the policies they mean.

Every option is checked when the options are built, and none is ever changed behind the
user's back: a combination that cannot work (e.g. `should_save_fn` with `save_on_steps`,
or `cleanup_tmp_directories` on a read-only manager) raises InvalidArgumentError saying
which to drop. The flat options are shorthands for policy objects; pass
`save_decision_policy=` / `preservation_policy=` to compose your own instead.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Collection, Mapping
from typing import Any

from jaxpoint.core.checkpointers import AsyncOptions, MultiprocessingOptions
from jaxpoint.core.errors import InvalidArgumentError
from jaxpoint.core.inspection.step_names import StepNameFormat, name_format_for
from jaxpoint.core.manager import preservation as keep
from jaxpoint.core.manager import save_decision as decide
from jaxpoint.core.manager.checkpoint_info import as_step
from jaxpoint.core.storage import validate_name
from jaxpoint.core.validation import require_positive_int

_DEFAULT_INTERVAL = 1


def _fail(option: str, expected: str, got: Any, fix: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"Expected CheckpointManagerOptions.{option} to be {expected}, got {got!r}. To fix, "
        f"{fix}."
    )


def _check_count(options: Any, name: str, fix: str) -> None:
    require_positive_int(getattr(options, name), what=f"CheckpointManagerOptions.{name}",
                         fix=fix, allow_none=True)


_ATOMICITY_FIX = ("drop it: the storage chooses the commit (a rename where that is atomic, "
                  "a commit marker elsewhere)")
# Orbax field -> (the only value accepted, how to get what was asked for).
_ORBAX_ONLY: dict[str, tuple[Any, str]] = {
    "todelete_full_path": (None, "pass todelete_subdir='todelete' to move deleted steps into "
                                 "a folder of the root, or drop it to delete them"),
    "num_deletion_threads": (None, "drop it: deletions run on one thread, off the training "
                                   "thread with enable_background_delete=True"),
    "file_options": (None, "drop it: files and folders get the process's umask"),
    "atomicity_options": (None, _ATOMICITY_FIX),
    "temporary_path_class": (None, _ATOMICITY_FIX),
    "prevent_write_metrics": (False, "drop it and call save() without metrics= to write none"),
    "enable_should_save_is_saving_in_progress_check": (
        True, "drop it: should_save() always tells the save-decision policy whether a save "
              "is in flight"),
    "enable_per_process_directory_creation": (
        False, "drop it: the primary process creates each step's folders"),
    "lightweight_initialize": (False, "drop it: the manager lists the steps when it opens"),
    "single_host_load_and_broadcast": (
        False, "drop it: every process lists the steps from the storage itself"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckpointManagerOptions:
    """How a CheckpointManager names, saves, keeps and deletes checkpoints.

    Saving: `save_interval_steps`, `save_on_steps`, `should_save_fn(step, last_step)` or a
    `save_decision_policy`; a preemption (`reached_preemption(step)`) and the first save
    into an empty directory always save. Keeping: `max_to_keep` newest (or best, with
    `best_fn(metrics)` and `best_mode` "max"/"min"), plus every `keep_period`-th step and
    one per `keep_time_interval`; or a `preservation_policy`. Names: `step_prefix`,
    `step_format_fixed_length` or `step_name_format`. Deleting: `enable_background_delete`,
    `todelete_subdir` (move instead of delete). `read_only=True` refuses every write.
    Preemption: `handle_sigterm=True` (one process) listens for SIGTERM while the manager
    is open, saves one checkpoint at the next step, and ends a loop that ignores
    `reached_preemption` once that checkpoint has committed; False installs no handler.
    Several processes use JAX's preemption service instead (`jax_enable_preemption_service`,
    env `JAX_ENABLE_PREEMPTION_SERVICE`).
    Writers: a manager opened for writing holds the directory against other processes
    (DirectoryInUseError naming the holder); `allow_concurrent_writers=True` is for
    deliberate multi-writer set-ups (see docs/reliability.md).
    Orbax 0.12.8's fields for machinery jaxpoint does not have (`todelete_full_path`,
    `file_options`, `lightweight_initialize`, ...) are accepted at their Orbax default only.
    """

    save_interval_steps: int | None = _DEFAULT_INTERVAL
    save_on_steps: Collection[int] | None = None
    should_save_fn: Callable[[int, int | None], bool] | None = None
    save_decision_policy: decide.SaveDecisionPolicy | None = None
    max_to_keep: int | None = None
    keep_time_interval: datetime.timedelta | None = None
    keep_period: int | None = None
    best_fn: Callable[[Mapping[str, Any]], Any] | None = None
    best_mode: str = "max"
    keep_checkpoints_without_metrics: bool = True
    preservation_policy: keep.PreservationPolicy | None = None
    step_prefix: str | None = None
    step_format_fixed_length: int | None = None
    step_name_format: StepNameFormat | None = None
    create: bool = True
    cleanup_tmp_directories: bool = False
    read_only: bool = False
    save_root_metadata: bool = True
    enable_async_checkpointing: bool = True
    async_options: AsyncOptions | None = None
    multiprocessing_options: MultiprocessingOptions = dataclasses.field(
        default_factory=MultiprocessingOptions)
    enable_background_delete: bool = False
    todelete_subdir: str | None = None
    handle_sigterm: bool = True
    allow_concurrent_writers: bool = False
    # Orbax's fields for machinery jaxpoint does not have: accepted at the value that changes
    # nothing, so copied options run while a real request fails loudly (_ORBAX_ONLY).
    todelete_full_path: str | None = None
    num_deletion_threads: int | None = None
    file_options: Any = None
    atomicity_options: Any = None
    temporary_path_class: Any = None
    prevent_write_metrics: bool = False
    enable_should_save_is_saving_in_progress_check: bool = True
    enable_per_process_directory_creation: bool = False
    lightweight_initialize: bool = False
    single_host_load_and_broadcast: bool = False

    def __post_init__(self) -> None:
        self._check_saving()
        self._check_keeping()
        self._check_naming()
        self._check_flags()
        for name, (default, fix) in _ORBAX_ONLY.items():
            if getattr(self, name) is not default:
                raise _fail(name, f"{default!r} (Orbax's default; jaxpoint has no such "
                            "machinery)", getattr(self, name), fix)

    def _check_saving(self) -> None:
        _check_count(self, "save_interval_steps", "pass a positive interval, or None to "
                     "save only on save_on_steps (and preemption)")
        if self.save_on_steps is not None:
            if isinstance(self.save_on_steps, str | bytes) or not isinstance(
                    self.save_on_steps, Collection):
                raise _fail("save_on_steps", "a collection of ints", self.save_on_steps,
                            "pass e.g. {100, 250}")
            steps = frozenset(as_step(s, what="step in save_on_steps") for s in self.save_on_steps)
            object.__setattr__(self, "save_on_steps", steps)
        if self.should_save_fn is not None and not callable(self.should_save_fn):
            raise _fail("should_save_fn", "callable(step, last_step) -> bool",
                        self.should_save_fn, "pass a function")
        interval_set = self.save_interval_steps not in (None, _DEFAULT_INTERVAL)
        for replacement in ("should_save_fn", "save_decision_policy"):
            if getattr(self, replacement) is None:
                continue
            clashes = [name for name, is_set in (("save_on_steps", self.save_on_steps),
                                                 ("save_interval_steps", interval_set)) if is_set]
            if replacement == "save_decision_policy" and self.should_save_fn is not None:
                clashes.append("should_save_fn")
            if clashes:
                raise InvalidArgumentError(
                    f"CheckpointManagerOptions.{replacement} decides every save by itself, so "
                    f"it cannot be combined with {clashes}. To fix, drop {clashes} or fold "
                    "them into one policy (e.g. AnySavePolicy([...]))."
                )
        policy = self.save_decision_policy
        if policy is not None and not callable(getattr(policy, "should_save", None)):
            raise _fail("save_decision_policy", "an object with should_save()", policy,
                        "pass e.g. FixedIntervalPolicy(100)")

    def _check_keeping(self) -> None:
        _check_count(self, "max_to_keep", "keep at least one checkpoint, or pass None to keep all")
        _check_count(self, "keep_period", "pass a positive number of steps")
        interval = self.keep_time_interval
        if interval is not None and (not isinstance(interval, datetime.timedelta)
                                     or interval <= datetime.timedelta(0)):
            raise _fail("keep_time_interval", "a positive datetime.timedelta or None", interval,
                        "pass e.g. datetime.timedelta(hours=1)")
        if self.best_fn is not None and not callable(self.best_fn):
            raise _fail("best_fn", "callable(metrics) -> value", self.best_fn,
                        "pass e.g. lambda metrics: metrics['loss']")
        if self.best_mode not in ("max", "min"):
            raise _fail("best_mode", "'max' or 'min'", self.best_mode,
                        "pass 'min' when smaller metrics are better, else 'max'")
        policy = self.preservation_policy
        if policy is not None:
            if not callable(getattr(policy, "should_preserve", None)):
                raise _fail("preservation_policy", "an object with should_preserve()", policy,
                            "pass e.g. LatestN(3)")
            clashes = [n for n in ("max_to_keep", "keep_time_interval", "keep_period")
                       if getattr(self, n) is not None]
            if clashes:
                raise InvalidArgumentError(
                    f"CheckpointManagerOptions.preservation_policy decides what is kept by "
                    f"itself, so it cannot be combined with {clashes}. To fix, drop {clashes} "
                    "or add the matching policies (LatestN, EveryNSteps, EveryNSeconds) to it."
                )

    def _check_naming(self) -> None:
        name_format = self.name_format()  # validates every naming option
        if self.todelete_subdir is not None:
            validate_name(self.todelete_subdir, what="todelete_subdir")
            if name_format.parse_name(self.todelete_subdir) is not None:
                raise _fail("todelete_subdir", "a folder name that is not a step name",
                            self.todelete_subdir, "pick e.g. 'todelete'")

    def _check_flags(self) -> None:
        for name in ("create", "cleanup_tmp_directories", "read_only", "save_root_metadata",
                     "enable_async_checkpointing", "enable_background_delete",
                     "keep_checkpoints_without_metrics", "allow_concurrent_writers",
                     "handle_sigterm"):
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, "a bool", getattr(self, name), "pass True or False")
        if self.read_only and self.cleanup_tmp_directories:
            raise InvalidArgumentError(
                "CheckpointManagerOptions.read_only=True forbids writes, but "
                "cleanup_tmp_directories=True would delete folders. To fix, drop one of them."
            )
        if self.async_options is not None and not isinstance(self.async_options, AsyncOptions):
            raise _fail("async_options", "an AsyncOptions or None", self.async_options,
                        "pass AsyncOptions(timeout_secs=...)")
        if not isinstance(self.multiprocessing_options, MultiprocessingOptions):
            raise _fail("multiprocessing_options", "a MultiprocessingOptions",
                        self.multiprocessing_options, "pass MultiprocessingOptions(...)")

    def name_format(self) -> StepNameFormat:
        """The step name format these options select."""
        return name_format_for(step_prefix=self.step_prefix,
                               step_format_fixed_length=self.step_format_fixed_length,
                               step_name_format=self.step_name_format,
                               where="CheckpointManagerOptions.")


def refuse_orbax_logger(logger: Any) -> None:
    """Orbax's `CheckpointManager(logger=...)`: accepted as None, its default."""
    if logger is not None:
        raise InvalidArgumentError(
            f"Expected CheckpointManager(logger=None), got {type(logger).__name__}: jaxpoint "
            "has no Orbax logger classes. To fix, drop logger=; every save and restore logs "
            "one INFO line on the 'jaxpoint' logger and reports jax.monitoring events."
        )


def save_decision_policy_for(options: CheckpointManagerOptions) -> decide.SaveDecisionPolicy:
    """The policy the options select: the given one, or the flat options combined by "any"."""
    if options.save_decision_policy is not None:
        return options.save_decision_policy
    if options.should_save_fn is not None:
        return decide.AnySavePolicy([decide.ShouldSaveFnPolicy(options.should_save_fn),
                                     decide.PreemptionCheckpointingPolicy()])
    policies: list[decide.SaveDecisionPolicy] = []
    if options.save_interval_steps is not None:
        policies.append(decide.FixedIntervalPolicy(options.save_interval_steps))
    if options.save_on_steps:
        policies.append(decide.SpecificStepsPolicy(options.save_on_steps))
    policies += [decide.PreemptionCheckpointingPolicy(), decide.InitialSavePolicy()]
    return decide.AnySavePolicy(policies)


def preservation_policy_for(options: CheckpointManagerOptions) -> keep.PreservationPolicy:
    """The policy the options select: the given one, or the flat options combined by "any"."""
    if options.preservation_policy is not None:
        return options.preservation_policy
    policies: list[keep.PreservationPolicy] = []
    if options.keep_period is not None:
        policies.append(keep.EveryNSteps(options.keep_period))
    if options.keep_time_interval is not None:
        policies.append(keep.EveryNSeconds(options.keep_time_interval.total_seconds()))
    if options.best_fn is not None:
        policies.append(keep.BestN(
            get_metric_fn=options.best_fn, n=options.max_to_keep,
            reverse=options.best_mode == "min",
            keep_checkpoints_without_metrics=options.keep_checkpoints_without_metrics))
    else:
        policies.append(keep.LatestN(options.max_to_keep))
    return keep.AnyPreservationPolicy(policies)
