"""Crash harness: run saves in a fresh interpreter, SIGKILL it inside a chosen phase, report.

A `Child` is one `python child.py` process. It warms up (imports jax and jaxpoint, saves
and restores once in a scratch folder) before it is handed a directory, so a pool keeps
spare children warming while the current one runs: the 2-3 s interpreter start of the
next kill overlaps with this one. Each child is killed exactly once.

Where a kill lands: the child reports `enter <phase>` / `exit <phase>` with CLOCK_MONOTONIC
timestamps (see child.py). To aim a kill at a phase, `CrashSession.kill` waits for the
1st or 2nd entry into it (picked at random), then sends SIGKILL at entry + U(0, typical
duration of that phase, learnt from all earlier children). Where the kill actually landed
is then read back from the markers stamped before the kill time, not assumed: a kill aimed
at a 1 ms phase may land just after it, and is counted where it landed.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import signal
import stat
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jaxpoint.core.storage import parse_tmp_name
from jaxpoint.core.storage.commit import SAVING

CHILD_SCRIPT = Path(__file__).with_name("child.py")
CHILD_ENV = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
READY_TIMEOUT_S = 180.0
DEFAULT_PHASE_S = 0.01
ONCE_PER_CHILD = {"cleanup"}  # phases a child enters only once: aim at the first entry


@dataclasses.dataclass(frozen=True)
class Marker:
    ts_ns: int
    event: str
    fields: tuple[str, ...]


class Child:
    """One fresh interpreter running child.py, killed once."""

    def __init__(self, scratch: Path) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        self.scratch = scratch
        read_fd, write_fd = os.pipe()
        config = json.dumps({"marker_fd": write_fd, "scratch": str(scratch)})
        self.log_path = scratch / "child.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(CHILD_SCRIPT), config], stdin=subprocess.PIPE,
                stdout=log, stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                env={**os.environ, **CHILD_ENV})
        os.close(write_fd)
        self.markers: list[Marker] = []
        self._changed = threading.Condition()
        self._is_done_reading = False
        self._reader = threading.Thread(target=self._read, args=(read_fd,), daemon=True)
        self._reader.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as stream:
            for line in stream:
                ts, _, rest = line.decode().rstrip("\n").partition(" ")
                event, *fields = rest.split(" ")
                with self._changed:
                    self.markers.append(Marker(int(ts), event, tuple(fields)))
                    self._changed.notify_all()
        with self._changed:
            self._is_done_reading = True
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[Marker]], bool], timeout_s: float) -> bool:
        """Waits until `predicate(markers)` or the child's end; True if the predicate held."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self.markers):
                remaining = deadline - time.monotonic()
                if self._is_done_reading or remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def wait_ready(self) -> None:
        if not self.wait_for(lambda markers: any(m.event == "ready" for m in markers),
                             READY_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"crash child never became ready; its log:\n{self.log_text()}")

    def go(self, config: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(config).encode() + b"\n")
        self.process.stdin.flush()

    def kill(self) -> int:
        """SIGKILLs the child; returns the CLOCK_MONOTONIC time just before the signal."""
        kill_ns = time.monotonic_ns()
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join()
        if self.process.stdin is not None:
            self.process.stdin.close()
        return kill_ns

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


class ChildPool:
    """Keeps `spares` children starting up, so each kill waits little for a warm one."""

    def __init__(self, scratch_root: Path, *, spares: int = 2) -> None:
        self._scratch_root = scratch_root
        self._spares = spares
        self._starting: collections.deque[Child] = collections.deque()
        self._launched = 0

    def _launch(self) -> None:
        self._launched += 1
        self._starting.append(Child(self._scratch_root / f"child-{self._launched:04d}"))

    def take(self) -> Child:
        if not self._starting:
            self._launch()
        child = self._starting.popleft()
        while len(self._starting) < self._spares:
            self._launch()
        child.wait_ready()
        return child

    def close(self) -> None:
        while self._starting:
            self._starting.popleft().kill()


class DurationBook:
    """Typical duration of each `phase@thread`, learnt from every child's markers."""

    def __init__(self) -> None:
        self._seen: dict[str, list[int]] = collections.defaultdict(list)

    def learn(self, markers: Iterable[Marker]) -> None:
        stacks: dict[str, list[Marker]] = collections.defaultdict(list)
        for marker in markers:
            if marker.event == "enter":
                stacks[marker.fields[2]].append(marker)
            elif marker.event == "exit" and stacks[marker.fields[2]]:
                entered = stacks[marker.fields[2]].pop()
                key = f"{entered.fields[0]}@{entered.fields[1]}"
                self._seen[key].append(marker.ts_ns - entered.ts_ns)

    def typical_s(self, key: str) -> float:
        seen = self._seen.get(key)
        return statistics.median(seen[-50:]) / 1e9 if seen else DEFAULT_PHASE_S


def active_phases(markers: Iterable[Marker], until_ns: int) -> list[str]:
    """`phase@thread` of the innermost phase of each thread running at `until_ns`."""
    stacks: dict[str, list[str]] = collections.defaultdict(list)
    for marker in markers:
        if marker.ts_ns > until_ns:
            break
        if marker.event == "enter":
            stacks[marker.fields[2]].append(f"{marker.fields[0]}@{marker.fields[1]}")
        elif marker.event == "exit" and stacks[marker.fields[2]]:
            stacks[marker.fields[2]].pop()
    return sorted(stack[-1] for stack in stacks.values() if stack)


@dataclasses.dataclass(kw_only=True)
class KillRecord:
    """One SIGKILL: what it aimed at, where it landed, and the steps the child reported."""

    scenario: str
    target: str
    is_hit: bool
    delay_ms: float
    active: list[str]
    begun: int | None
    committed: int | None
    staged: int | None
    restore_mismatches: int
    run_s: float
    ready_wait_s: float
    disk: str = ""

    @property
    def landed(self) -> str:
        return "+".join(self.active) if self.active else "between phases"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "landed": self.landed}


def _last_step(markers: list[Marker], event: str) -> int | None:
    steps = [int(m.fields[0]) for m in markers if m.event == event]
    return max(steps) if steps else None


def _sleep_until(deadline_ns: int) -> None:
    while (remaining := deadline_ns - time.monotonic_ns()) > 0:
        if remaining > 2_000_000:
            time.sleep((remaining - 1_000_000) / 1e9)


class CrashSession:
    """Children, what they taught about phase durations, and every kill so far."""

    def __init__(self, scratch_root: Path, *, spares: int = 2) -> None:
        self.pool = ChildPool(scratch_root, spares=spares)
        self.durations = DurationBook()
        self.records: list[KillRecord] = []

    def kill(self, scenario: str, go: dict[str, Any], target: str, rng: Any, *,
             timeout_s: float = 30.0) -> KillRecord:
        """Runs `go` in a warm child and SIGKILLs it inside `target` ("phase@thread")."""
        phase, thread = target.split("@")
        take_ns = time.monotonic_ns()
        child = self.pool.take()
        start = len(child.markers)
        occurrence = 1 if phase in ONCE_PER_CHILD else int(rng.integers(1, 3))

        def entered(markers: list[Marker]) -> bool:
            hits = [m for m in markers[start:] if m.event == "enter"
                    and m.fields[0] == phase and m.fields[1] == thread]
            return len(hits) >= occurrence or any(m.event in ("error", "finished")
                                                   for m in markers[start:])

        go_ns = time.monotonic_ns()
        child.go(go)
        is_hit = child.wait_for(entered, timeout_s)
        scenario_markers = child.markers[start:]
        problems = [" ".join(m.fields) for m in scenario_markers if m.event == "error"]
        if problems or any(m.event == "finished" for m in scenario_markers):
            child.kill()
            raise AssertionError(f"{scenario}: the child stopped before the kill "
                                 f"({problems or 'ran out of saves'}); its log:\n{child.log_text()}")
        delay_s = 0.0
        if is_hit:
            entry = [m for m in scenario_markers if m.event == "enter" and m.fields[0] == phase
                     and m.fields[1] == thread][occurrence - 1]
            delay_s = float(rng.uniform(0.0, self.durations.typical_s(target)))
            _sleep_until(entry.ts_ns + int(delay_s * 1e9))
        kill_ns = child.kill()
        if child.process.returncode != -signal.SIGKILL:
            raise AssertionError(f"{scenario}: the child exited with {child.process.returncode} "
                                 f"before the SIGKILL; its log:\n{child.log_text()}")
        self.durations.learn(child.markers)
        markers = child.markers[start:]
        record = KillRecord(
            scenario=scenario, target=target, is_hit=is_hit, delay_ms=delay_s * 1e3,
            active=active_phases(markers, kill_ns), begun=_last_step(markers, "begin"),
            committed=_last_step(markers, "committed"), staged=_last_step(markers, "staged"),
            restore_mismatches=sum(1 for m in markers if m.event == "restored"
                                   and m.fields[1] != "ok"),
            run_s=(kill_ns - go_ns) / 1e9, ready_wait_s=(go_ns - take_ns) / 1e9)
        self.records.append(record)
        return record

    def close(self) -> None:
        self.pool.close()


def tree_snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry below `root`: type, size, inode, mtime, ctime and a content hash."""
    snapshot: dict[str, tuple[Any, ...]] = {}
    for folder, folders, files in os.walk(root):
        for name in [*folders, *files]:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            digest = ""
            if stat.S_ISREG(info.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            snapshot[os.path.relpath(path, root)] = (
                stat.S_IFMT(info.st_mode), info.st_size, info.st_ino, info.st_mtime_ns,
                info.st_ctime_ns, digest)
    return snapshot


def _save_progress(folder: Path) -> str:
    """How far a save got in the unfinished folder `folder`."""
    if (folder / "commit_success.txt").exists():
        return "marker written, not renamed"
    if (folder / "_CHECKPOINT_METADATA").exists():
        return "finalized"
    manifests = list(folder.rglob("manifest.ocdbt"))
    if any(not path.parent.name.startswith("ocdbt.process_") for path in manifests):
        return "merged"
    if manifests:
        return "data written"
    if any(folder.rglob("ocdbt.process_*")):
        return "data being written"
    return "staging"


def disk_state(directory: Path) -> str:
    """What an unfinished save or deletion left in `directory`, e.g. 'tmp 7: merged'."""
    parts = []
    for entry in sorted(directory.iterdir()):
        name = entry.name
        tmp = parse_tmp_name(name)
        if tmp is None:
            continue
        if tmp.kind == SAVING:
            parts.append(f"tmp {tmp.base}: {_save_progress(entry)}")
        else:
            parts.append(f"{tmp.kind} {tmp.base}")
    return "; ".join(parts) or "no leftovers"


def summary_lines(records: list[KillRecord]) -> list[str]:
    """The figures of a run: kills per scenario, per phase landed in, per disk state."""
    if not records:
        return []
    lines = [f"crash harness: {len(records)} SIGKILLs, each followed by its test's checks "
             "(a failed check fails that test above)"]
    by_scenario = collections.Counter(r.scenario for r in records)
    lines.append("  per scenario: " + ", ".join(f"{k} {v}" for k, v in sorted(by_scenario.items())))
    landed = collections.Counter(phase for r in records for phase in (r.active or ["between phases"]))
    lines.append("  kills landing while a phase ran (a kill may count under two threads):")
    lines += [f"    {phase:<22} {count}" for phase, count in sorted(landed.items())]
    hits = collections.Counter((r.target, r.target in r.active) for r in records)
    lines.append("  aimed at -> landed inside it:")
    for target in sorted({r.target for r in records}):
        inside, aimed = hits[(target, True)], hits[(target, True)] + hits[(target, False)]
        lines.append(f"    {target:<22} {inside}/{aimed}")
    disk = collections.Counter(_coarse_disk(r.disk) for r in records)
    lines.append("  on disk after the kill: " + ", ".join(f"{k} {v}" for k, v in sorted(disk.items())))
    return lines


def _coarse_disk(state: str) -> str:
    if state == "no leftovers":
        return state
    kinds = sorted({part.split(":")[-1].strip() if part.startswith("tmp ") else part.split(" ")[0]
                    for part in state.split("; ")})
    return "+".join(kinds)
