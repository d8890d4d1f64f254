"""Runs cases: every repetition of every participant in a fresh process, interleaved.

Repetitions alternate between participants (rep 1 of each, then rep 2 of each, ...), so
that a noisy minute on this shared machine hits everyone alike. A participant whose trial
fails is not retried; its first error becomes its row in the report. Restores read the
checkpoint that the matching save case left behind, or prepare one if it is missing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import imports, multihost
from benchmarks.cases import Case, Participant

_PRODUCERS = {"save", "np_save"}
_SOURCE_OPS = {"restore", "restore_resharded", "raw_read", "np_load"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    rep: int
    metrics: dict[str, float]
    info: dict[str, Any]
    error: str | None
    wall_s: float


@dataclasses.dataclass(kw_only=True)
class ParticipantResult:
    participant: Participant
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    error: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseResult:
    case: Case
    participants: list[ParticipantResult]


class Runner:
    """Owns the scratch folder and the child processes of one benchmark run."""

    def __init__(self, *, repo: str, scratch: str, progress: Callable[[str], None]):
        self._repo = repo
        self._scratch = scratch
        self._logs = os.path.join(scratch, "logs")
        self._progress = progress
        self._broken_sources: dict[tuple[str, str], str] = {}
        self._env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2",
                     "PYTHONUNBUFFERED": "1"}
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(self._logs)

    def remove_data(self) -> None:
        """Delete every checkpoint and baseline file; keep the trial logs."""
        for name in os.listdir(self._scratch):
            if name != "logs":
                path = os.path.join(self._scratch, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)

    def run(self, cases: list[Case]) -> list[CaseResult]:
        results = []
        for index, case in enumerate(cases):
            results.append(self._run_case(case))
            later_keys = {c.scratch_key for c in cases[index + 1:]}
            if case.scratch_key and case.scratch_key not in later_keys:
                shutil.rmtree(os.path.join(self._scratch, case.scratch_key), ignore_errors=True)
        return results

    def _run_case(self, case: Case) -> CaseResult:
        results = [ParticipantResult(participant=p) for p in case.participants]
        if case.runner == "import":
            self._run_imports(case, results)
            return CaseResult(case=case, participants=results)
        for rep in range(case.reps):
            # Each repetition starts one participant later, so nobody always runs right
            # after the same neighbour (a save that follows a write burst is slowed by it).
            shift = rep % len(results)
            for result in results[shift:] + results[:shift]:
                if result.error is None:
                    self._run_rep(case, result, rep)
        for result in results:
            if result.participant.op not in _PRODUCERS | _SOURCE_OPS:
                shutil.rmtree(self._directory(case, result.participant), ignore_errors=True)
        return CaseResult(case=case, participants=results)

    def _run_rep(self, case: Case, result: ParticipantResult, rep: int) -> None:
        participant = result.participant
        error = self._ensure_source(case, participant)
        if error is None:
            outcome = self._run_once(case, participant, rep, op=participant.op)
            error = outcome.error
            if error is None:
                result.outcomes.append(outcome)
        if error is not None:
            result.error = error
        if participant.op in _PRODUCERS:
            key = (case.scratch_key, self._source_name(participant))
            if error is None:
                self._broken_sources.pop(key, None)
            else:
                self._broken_sources[key] = error
        status = "FAILED: " + error if error else _summary(result.outcomes[-1])
        self._progress(f"{case.id} | {participant.name} | rep {rep + 1}/{case.reps} | {status}")

    def _source_name(self, participant: Participant) -> str:
        if participant.op == "np_save":
            return "npy"
        return participant.source or participant.flavor or participant.op

    def _directory(self, case: Case, participant: Participant) -> str:
        base = os.path.join(self._scratch, case.scratch_key)
        if participant.op in _PRODUCERS or participant.op in _SOURCE_OPS:
            return os.path.join(base, self._source_name(participant))
        return os.path.join(base, f"{participant.op}-{participant.name}")

    def _ensure_source(self, case: Case, participant: Participant) -> str | None:
        """Make sure the files a reading participant needs exist; returns an error if not."""
        if participant.op not in _SOURCE_OPS:
            return None
        source = self._source_name(participant)
        if os.path.exists(self._directory(case, participant) + ".ok"):
            return None
        key = (case.scratch_key, source)
        if key not in self._broken_sources:
            producer = Participant(name=f"prepare {source}",
                                   op="np_save" if source == "npy" else "save",
                                   flavor=None if source == "npy" else source)
            outcome = self._run_once(case, producer, -1, op=producer.op)
            if outcome.error is not None:
                self._broken_sources[key] = outcome.error
        if key in self._broken_sources:
            return (f"nothing to read: writing the {source} files failed: "
                    f"{self._broken_sources[key]}")
        return None

    def _run_once(self, case: Case, participant: Participant, rep: int, *, op: str) -> Outcome:
        directory = self._directory(case, participant)
        if op in _PRODUCERS or op not in _SOURCE_OPS:
            shutil.rmtree(directory, ignore_errors=True)
            if os.path.exists(directory + ".ok"):
                os.remove(directory + ".ok")
        spec = {"op": op, "flavor": participant.flavor, "state": case.state.to_json(),
                "directory": directory, "cache": case.cache, "saves": case.saves}
        name = f"{case.id}-{participant.name}-{rep + 1}".replace("/", "_").replace(" ", "_")
        if case.runner == "multihost":
            outcome = self._multihost(spec, name, rep, case.timeout_s)
        else:
            outcome = self._trial(spec, name, rep, case.timeout_s)
        if outcome.error is None and op in _PRODUCERS:
            with open(directory + ".ok", "w"):
                pass
        return outcome

    def _trial(self, spec: dict[str, Any], name: str, rep: int, timeout_s: float) -> Outcome:
        spec_path = os.path.join(self._logs, name + ".spec.json")
        result_path = os.path.join(self._logs, name + ".result.json")
        log_path = os.path.join(self._logs, name + ".log")
        with open(spec_path, "w") as file:
            json.dump(spec, file)
        start = time.perf_counter()
        try:
            with open(log_path, "w") as log:
                subprocess.run([sys.executable, "-m", "benchmarks.trial", spec_path, result_path],
                               cwd=self._repo, env=self._env, stdout=log,
                               stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return _failed(rep, f"timed out after {timeout_s:.0f} s (log: {log_path})", start)
        return _read_outcome(result_path, log_path, rep, start)

    def _multihost(self, spec: dict[str, Any], name: str, rep: int, timeout_s: float) -> Outcome:
        count = multihost.PROCESS_COUNT
        result_paths = [os.path.join(self._logs, f"{name}.p{i}.result.json") for i in range(count)]
        log_paths = [os.path.join(self._logs, f"{name}.p{i}.log") for i in range(count)]
        start = time.perf_counter()
        statuses = multihost.launch(spec, result_paths=result_paths, log_paths=log_paths,
                                    cwd=self._repo, env=self._env, timeout_s=timeout_s)
        outcomes = [_read_outcome(r, log, rep, start)
                    for r, log in zip(result_paths, log_paths, strict=True)]
        errors = [f"process {i}: {o.error}" for i, o in enumerate(outcomes) if o.error]
        if None in statuses and not errors:
            errors.append(f"timed out after {timeout_s:.0f} s (logs: {log_paths[0]})")
        if errors:
            return _failed(rep, "; ".join(errors), start)
        # The slowest process decides when the collective operation is done.
        seconds = max(o.metrics["seconds"] for o in outcomes)
        return dataclasses.replace(outcomes[0], metrics={"seconds": seconds},
                                   info={**outcomes[0].info,
                                         "per_process_s": [o.metrics["seconds"] for o in outcomes]})

    def _run_imports(self, case: Case, results: list[ParticipantResult]) -> None:
        for rep in range(-1 if case.warmup else 0, case.reps):  # rep -1 is untimed
            for result in results:
                if result.error is not None:
                    continue
                start = time.perf_counter()
                try:
                    metrics = imports.time_import(result.participant.flavor or "jax",
                                                  cwd=self._repo, env=self._env,
                                                  timeout_s=case.timeout_s)
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    result.error = str(error)
                    continue
                if rep >= 0:
                    result.outcomes.append(Outcome(rep=rep, metrics=metrics, info={}, error=None,
                                                   wall_s=time.perf_counter() - start))
            if rep >= 0:
                self._progress(f"{case.id} | rep {rep + 1}/{case.reps} | " + ", ".join(
                    f"{r.participant.name} +{r.outcomes[-1].metrics['added_s']:.2f}s"
                    for r in results if r.error is None and r.outcomes))


def _failed(rep: int, error: str, start: float) -> Outcome:
    return Outcome(rep=rep, metrics={}, info={}, error=error, wall_s=time.perf_counter() - start)


def _read_outcome(result_path: str, log_path: str, rep: int, start: float) -> Outcome:
    try:
        with open(result_path) as file:
            result = json.load(file)
    except (OSError, ValueError):
        return _failed(rep, f"the trial process died without a result (log: {log_path})", start)
    if "error" in result:
        return _failed(rep, result["error"], start)
    return Outcome(rep=rep, metrics=result["metrics"], info=result.get("info", {}), error=None,
                   wall_s=time.perf_counter() - start)


def _summary(outcome: Outcome) -> str:
    metrics = outcome.metrics
    shown = {k: v for k, v in metrics.items() if k in ("seconds", "blocked_s", "peak_over_state")}
    return ", ".join(f"{k} {v:.3f}" for k, v in shown.items()) or json.dumps(metrics)
