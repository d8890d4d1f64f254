"""Running a function in N fresh JAX processes joined by `jax.distributed` on loopback.

Multihost code is only tested for real with real processes. `run_processes` starts N new
Python interpreters (never forks: JAX must not be initialised in the parent), each with K
virtual CPU devices, joins them with `jax.distributed.initialize` on 127.0.0.1, calls a
module-level target in each and returns what every process returned. A process may also
raise, die (`crash_process`) or hang; `run_processes_with_outcomes` tells which, and the
deadline kills stragglers so a broken test never hangs the suite.

    def _target(scale):  # module level, so the children can import it
        return multihost.process_index() * scale

    def test_indices():
        assert run_processes(_target, num_processes=2, devices_per_process=2,
                             timeout_s=60, args=(10,)) == [0, 10]
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.util
import json
import logging
import math
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from jaxpoint.core.errors import InvalidArgumentError, ProcessRunError
from jaxpoint.core.validation import require_positive_int

logger = logging.getLogger(__name__)

# How long processes that already reported may linger (in jax.distributed.shutdown waiting
# for a dead peer) before they are killed; their outcome is already known.
_SETTLE_S = 1.0
_POLL_S = 0.05
_OUTPUT_TAIL_CHARS = 4000
_DESCRIBED_CHARS = 300

# Set in each child before the target runs; see `run_process_id`.
_run_process_id: int | None = None

_BOOTSTRAP = """
import json, sys
spec = json.load(open(sys.argv[1]))
sys.path[:0] = [entry for entry in spec["sys_path"] if entry not in sys.path]
from jaxpoint.core.testing.multiprocess import _child_main
_child_main(spec)
"""


class ProcessStatus(enum.Enum):
    """How one process of a run ended."""

    RETURNED = "returned"
    RAISED = "raised"
    DIED = "died"
    TIMED_OUT = "timed out"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcessOutcome:
    """What one process did: its return value, its exception, or how it died.

    `error` is the unpickled exception when the parent can rebuild it; `error_type`
    ("module.QualName") and `traceback` are there even when it cannot. `exit_code` is
    negative for a signal (-9: killed by the harness after reporting or at the deadline).
    """

    process_id: int
    status: ProcessStatus
    value: Any = None
    error: BaseException | None = None
    error_type: str | None = None
    traceback: str = ""
    exit_code: int | None = None
    output: str = ""

    def describe(self) -> str:
        """One line: which process, how it ended and why."""
        where = f"process {self.process_id}"
        if self.status is ProcessStatus.RAISED:
            message = str(self.error) if self.error is not None else "(see traceback)"
            if len(message) > _DESCRIBED_CHARS:
                message = message[:_DESCRIBED_CHARS] + "..."
            return f"{where} raised {self.error_type}: {message}"
        if self.status is ProcessStatus.DIED:
            return f"{where} died with exit code {self.exit_code}"
        if self.status is ProcessStatus.TIMED_OUT:
            return f"{where} timed out and was killed"
        return f"{where} returned"


def run_processes(
    target: Callable[..., Any],
    *,
    num_processes: int,
    devices_per_process: int,
    timeout_s: float,
    args: Sequence[Any] = (),
    env: Mapping[str, str] | None = None,
    heartbeat_timeout_s: int = 30,
    initialize_distributed: bool = True,
) -> list[Any]:
    """Runs `target(*args)` in N fresh processes and returns their values, in process order.

    Raises `ProcessRunError` with every failing process's traceback or output tail when
    any process raised, died or ran past `timeout_s`. See `run_processes_with_outcomes`.
    """
    return returned_values(
        run_processes_with_outcomes(
            target,
            num_processes=num_processes,
            devices_per_process=devices_per_process,
            timeout_s=timeout_s,
            args=args,
            env=env,
            heartbeat_timeout_s=heartbeat_timeout_s,
            initialize_distributed=initialize_distributed,
        )
    )


def run_processes_with_outcomes(
    target: Callable[..., Any],
    *,
    num_processes: int,
    devices_per_process: int,
    timeout_s: float,
    args: Sequence[Any] = (),
    env: Mapping[str, str] | None = None,
    heartbeat_timeout_s: int = 30,
    initialize_distributed: bool = True,
) -> list[ProcessOutcome]:
    """Runs `target(*args)` in N fresh processes and reports how each one ended.

    `target` must be a module-level function (children import it by name) and `args` and
    its return value must pickle. Each child gets `JAX_PLATFORMS=cpu`,
    `--xla_force_host_platform_device_count=devices_per_process` and `env` on top. With
    `initialize_distributed` the children call `jax.distributed.initialize` first; peers
    of a process that died are stopped by JAX `heartbeat_timeout_s` later, so a test that
    expects survivors to raise `BarrierTimeoutError` uses barrier timeouts well below it.
    Processes still running `timeout_s` after the start are killed and reported as timed
    out.
    """
    _check_count(num_processes, "num_processes")
    _check_count(devices_per_process, "devices_per_process")
    _check_count(heartbeat_timeout_s, "heartbeat_timeout_s")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise InvalidArgumentError(
            f"Expected timeout_s > 0 seconds for run_processes, got {timeout_s!r}. To fix, "
            "pass the longest the whole run may take, e.g. timeout_s=60."
        )
    target_spec = _target_spec(target)
    with tempfile.TemporaryDirectory(prefix="jaxpoint-processes-") as tmp:
        workdir = Path(tmp)
        args_path = workdir / "args.pkl"
        try:
            args_path.write_bytes(pickle.dumps(tuple(args)))
        except Exception as error:
            raise InvalidArgumentError(
                f"Expected picklable args for run_processes, got {args!r} ({error}). To fix, "
                "pass plain data; build other objects inside the target."
            ) from error
        common = {
            "num_processes": num_processes,
            "coordinator": f"127.0.0.1:{_free_port()}",
            "initialize": initialize_distributed,
            "timeout_s": math.ceil(timeout_s),
            "heartbeat_timeout_s": heartbeat_timeout_s,
            "target": target_spec,
            "sys_path": [entry for entry in sys.path if entry],
            "args_path": str(args_path),
        }
        child_env = _child_env(devices_per_process, env)
        started = time.monotonic()
        children = [_start(i, workdir, common, child_env) for i in range(num_processes)]
        timed_out = _wait(children, workdir, deadline=started + timeout_s)
        logger.debug("%d processes ran %.1f s", num_processes, time.monotonic() - started)
        return [
            _outcome(i, child, workdir, timed_out=i in timed_out)
            for i, child in enumerate(children)
        ]


def returned_values(outcomes: Sequence[ProcessOutcome]) -> list[Any]:
    """The processes' return values, or `ProcessRunError` describing every failure."""
    failed = [o for o in outcomes if o.status is not ProcessStatus.RETURNED]
    if not failed:
        return [o.value for o in outcomes]
    summary = "".join(f"\n  {o.describe()}" for o in failed)
    sections = []
    for outcome in failed:
        body = outcome.traceback or f"last output:\n{outcome.output}"
        sections.append(f"\n--- process {outcome.process_id} ({outcome.status.value}) ---\n"
                        f"{body.rstrip()}")
    raise ProcessRunError(
        f"Expected all {len(outcomes)} processes to return, but {len(failed)} did not:"
        f"{summary}\nTo fix, read the tracebacks and output below.{''.join(sections)}",
        outcomes=tuple(outcomes),
    )


def run_process_id() -> int:
    """This child's index among the processes of its `run_processes` call.

    Unlike `jaxpoint.core.multihost.process_index`, it also tells processes apart when
    they run with `initialize_distributed=False`.
    """
    if _run_process_id is None:
        raise InvalidArgumentError(
            "Expected run_process_id() to be called inside a process started by "
            f"run_processes, but process {os.getpid()} was not. To fix, call it only from "
            "a run_processes target."
        )
    return _run_process_id


def crash_process(exit_code: int = 1) -> NoReturn:
    """Ends this process at once, as a crash would: no cleanup, no result, no shutdown."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def _check_count(value: int, name: str) -> None:
    require_positive_int(value, what=f"{name} for run_processes", fix=f"pass e.g. {name}=2")


def _target_spec(target: Callable[..., Any]) -> dict[str, str | None]:
    module_name = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", "")
    module = sys.modules.get(module_name or "")
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if module is None or module_name == "__main__" or found is not target:
        raise InvalidArgumentError(
            f"Expected a module-level function that child processes can import, got "
            f"{target!r} (module {module_name!r}, name {qualname!r}). To fix, define the "
            "target at the top level of an importable module, such as the test module."
        )
    return {"module": module_name, "qualname": qualname, "file": getattr(module, "__file__", None)}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _child_env(devices_per_process: int, env: Mapping[str, str] | None) -> dict[str, str]:
    child_env = dict(os.environ)
    flags = child_env.get("XLA_FLAGS", "").split()
    flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
    flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
    child_env.update(XLA_FLAGS=" ".join(flags), JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    child_env.update(env or {})
    return child_env


def _start(
    index: int, workdir: Path, common: dict[str, Any], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    spec = dict(common, process_id=index, result_path=str(workdir / f"result-{index}.pkl"))
    spec_path = workdir / f"spec-{index}.json"
    spec_path.write_text(json.dumps(spec))
    with open(workdir / f"output-{index}.log", "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, str(spec_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _wait(children: list[subprocess.Popen[bytes]], workdir: Path, *, deadline: float) -> set[int]:
    """Waits for every child; returns the indices killed while still working on the target."""
    settle_until = None
    try:
        while any(child.poll() is None for child in children):
            now = time.monotonic()
            if now >= deadline:
                break
            reported = all(
                child.poll() is not None or (workdir / f"result-{i}.pkl").exists()
                for i, child in enumerate(children)
            )
            if reported:
                settle_until = settle_until or now + _SETTLE_S
                if now >= settle_until:
                    break
            time.sleep(_POLL_S)
    finally:
        running = {i for i, child in enumerate(children) if child.poll() is None}
        for i in running:
            children[i].kill()
        for child in children:
            child.wait()
    return {i for i in running if not (workdir / f"result-{i}.pkl").exists()}


def _outcome(
    index: int, child: subprocess.Popen[bytes], workdir: Path, *, timed_out: bool
) -> ProcessOutcome:
    output = (workdir / f"output-{index}.log").read_bytes()[-_OUTPUT_TAIL_CHARS:]

    def outcome(status: ProcessStatus, **found: Any) -> ProcessOutcome:
        return ProcessOutcome(process_id=index, status=status, exit_code=child.returncode,
                              output=output.decode(errors="replace"), **found)

    result_path = workdir / f"result-{index}.pkl"
    if not result_path.exists():
        return outcome(ProcessStatus.TIMED_OUT if timed_out else ProcessStatus.DIED)
    record = pickle.loads(result_path.read_bytes())
    if record["status"] == "returned":
        try:
            value = pickle.loads(record["value"])
        except Exception:
            return outcome(
                ProcessStatus.RAISED, error_type="pickle.UnpicklingError",
                traceback=f"the parent could not unpickle the returned value:\n"
                f"{traceback.format_exc()}",
            )
        return outcome(ProcessStatus.RETURNED, value=value)
    try:
        error = pickle.loads(record["error"]) if record["error"] is not None else None
    except Exception:
        error = None
    return outcome(ProcessStatus.RAISED, error=error, error_type=record["error_type"],
                   traceback=record["traceback"])


def _child_main(spec: dict[str, Any]) -> NoReturn:
    """Runs in each child: joins the job, runs the target, records how it went, exits."""
    global _run_process_id
    _run_process_id = spec["process_id"]
    distributed: ModuleType | None = None
    try:
        if spec["initialize"]:
            # Imported in the child only: the parent need not import jax at all.
            import jax.distributed as joined

            distributed = joined
            distributed.initialize(
                coordinator_address=spec["coordinator"],
                coordinator_bind_address=spec["coordinator"],
                num_processes=spec["num_processes"],
                process_id=spec["process_id"],
                initialization_timeout=spec["timeout_s"],
                heartbeat_timeout_seconds=spec["heartbeat_timeout_s"],
                # Long enough that a peer still inside its target is waited for, not failed.
                shutdown_timeout_seconds=spec["timeout_s"],
            )
        target = _import_target(spec["target"])
        args = pickle.loads(Path(spec["args_path"]).read_bytes())
        record = {"status": "returned", "value": pickle.dumps(target(*args))}
    except BaseException as error:  # noqa: B036 -- the parent reports even SystemExit.
        record = _raised_record(error)
    result_path = Path(spec["result_path"])
    partial = result_path.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(record))
    os.replace(partial, result_path)
    if distributed is not None:
        try:
            distributed.shutdown()
        except Exception:
            logger.exception("jax.distributed.shutdown failed on process %d", spec["process_id"])
    crash_process(0 if record["status"] == "returned" else 1)


def _raised_record(error: BaseException) -> dict[str, Any]:
    try:
        pickled: bytes | None = pickle.dumps(error)
    except Exception:
        pickled = None
    kind = type(error)
    return {
        "status": "raised",
        "error": pickled,
        "error_type": f"{kind.__module__}.{kind.__qualname__}",
        "traceback": "".join(traceback.format_exception(error)),
    }


def _import_target(target: dict[str, str | None]) -> Callable[..., Any]:
    name, file = target["module"], target["file"]
    assert name is not None and target["qualname"] is not None
    try:
        module = importlib.import_module(name)
    except ImportError:
        # pytest's importlib mode names test modules after paths that may not be importable.
        if file is None:
            raise
        spec = importlib.util.spec_from_file_location(name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    found: Any = module
    for part in target["qualname"].split("."):
        found = getattr(found, part)
    return found
