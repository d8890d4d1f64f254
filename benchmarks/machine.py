"""The machine, library versions and date a run is recorded with."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from typing import Any

DISTRIBUTIONS = ("jaxpoint-core", "orbax-checkpoint", "jax", "jaxlib", "tensorstore", "numpy")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def _filesystem(path: str) -> str:
    path = os.path.realpath(path)
    best = ("", "unknown", "unknown")
    with open("/proc/mounts") as mounts:
        for line in mounts:
            device, mount_point, fs_type = line.split()[:3]
            if (path == mount_point or path.startswith(mount_point.rstrip("/") + "/")) \
                    and len(mount_point) >= len(best[0]):
                best = (mount_point, device, fs_type)
    return f"{best[2]} on {best[1]}"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit(repo: str) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" (with uncommitted changes)" if dirty.strip() else "")


def load_average() -> str:
    """The 1/5/15-minute load averages: how busy the shared machine was."""
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def describe(*, repo: str, scratch: str) -> dict[str, Any]:
    return {
        "load_average_start": load_average(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(_memory_gib(), 1),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filesystem": _filesystem(scratch),
        "commit": _git_commit(repo),
        "versions": {name: _version(name) for name in DISTRIBUTIONS},
    }
