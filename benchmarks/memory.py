"""Exact peak memory of one operation, from the kernel's high-water mark (VmHWM).

VmHWM is a process-lifetime maximum. Writing "5" to /proc/self/clear_refs resets it to
the current RSS, so the peak after the operation minus the RSS just before it is the
operation's own peak. Where the reset is refused, the lifetime maximum is used and the
result says so (it may then include earlier peaks, such as building the state).
"""

from __future__ import annotations

import dataclasses


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"Expected a {field} line in /proc/self/status; this suite needs Linux.")


def rss_bytes() -> int:
    return _status_bytes("VmRSS")


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


@dataclasses.dataclass(frozen=True, kw_only=True)
class PeakProbe:
    """Started right before a timed operation; `peak_above_baseline_bytes` right after."""

    baseline_bytes: int
    is_reset: bool

    @classmethod
    def start(cls) -> PeakProbe:
        is_reset = _reset_high_water_mark()
        return cls(baseline_bytes=rss_bytes(), is_reset=is_reset)

    @property
    def method(self) -> str:
        return "VmHWM reset by clear_refs" if self.is_reset else "lifetime VmHWM (no reset)"

    def peak_above_baseline_bytes(self) -> int:
        return max(0, _status_bytes("VmHWM") - self.baseline_bytes)
