"""The targets of issue 6, judged on the results of one run (the JSON written by `report`).

Every judgement is a ratio of numbers measured side by side in the same run. A target
with a missing input (a failed or skipped case, a size quick mode does not run) names
what is missing instead of guessing.
"""

from __future__ import annotations

import statistics
from typing import Any

MET, NOT_MET = "met", "NOT met"
# What "RSS stays flat" means here: over the second half of the saves, RSS grows by less
# than 5% of the state in total.
RSS_FLAT_FRACTION = 0.05
Row = dict[str, str]


class _Results:
    def __init__(self, results: dict[str, Any]):
        self._cases = {case["id"]: case for case in results["cases"]}

    def ids(self, prefix: str) -> list[str]:
        return [case_id for case_id in self._cases if case_id.startswith(prefix)]

    def state_bytes(self, case_id: str) -> int | None:
        return self._cases[case_id]["state_bytes"] if case_id in self._cases else None

    def median(self, case_id: str, participant: str, key: str = "seconds") -> float | None:
        for entry in self._cases.get(case_id, {}).get("participants", []):
            values = [rep["metrics"][key] for rep in entry["reps"] if key in rep["metrics"]]
            if entry["name"] == participant and values and not entry["error"]:
                return statistics.median(values)
        return None

    def missing(self, case_id: str, *participants: str, key: str = "seconds") -> str:
        absent = [p for p in participants if self.median(case_id, p, key) is None]
        return f"no result for {', '.join(absent)} in {case_id}"


def _row(target: str, is_met: bool | None, measured: str, missing: str) -> Row:
    if is_met is None:
        return {"target": target, "measured": missing, "status": "n/a"}
    return {"target": target, "measured": measured, "status": MET if is_met else NOT_MET}


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _speedup_rows(r: _Results, prefix: str, need: float, what: str) -> list[Row]:
    rows = []
    for case_id in r.ids(prefix):
        speedup = _ratio(r.median(case_id, "orbax"), r.median(case_id, "jaxpoint"))
        rows.append(_row(f"{what} ({case_id}): >= {need}x orbax",
                         None if speedup is None else speedup >= need, f"{speedup or 0:.2f}x",
                         r.missing(case_id, "orbax", "jaxpoint")))
    return rows or [_row(f"{what}: >= {need}x orbax", None, "", f"no {prefix}* case in this run")]


def _durable_save(r: _Results) -> list[Row]:
    rows = _speedup_rows(r, "save/", 1.8, "1. durable save")
    for case_id in r.ids("save/"):
        of_raw = _ratio(r.median(case_id, "raw write+fsync"), r.median(case_id, "jaxpoint"))
        rows.append(_row(f"1. durable save ({case_id}): >= 80% of raw fsync'd write",
                         None if of_raw is None else of_raw >= 0.8, f"{of_raw or 0:.0%}",
                         r.missing(case_id, "raw write+fsync", "jaxpoint")))
    return rows


def _restore(r: _Results) -> list[Row]:
    rows = []
    for case_id in r.ids("restore-cold/"):
        speedup = _ratio(r.median(case_id, "orbax"), r.median(case_id, "jaxpoint"))
        of_raw = _ratio(r.median(case_id, "raw read of jaxpoint files"),
                        r.median(case_id, "jaxpoint"))
        is_met = None if speedup is None or of_raw is None else speedup >= 2 or of_raw >= 0.9
        rows.append(_row(f"2. cold restore ({case_id}): >= 2x orbax, or >= 90% of a raw cold read",
                         is_met, f"{speedup or 0:.2f}x orbax, {of_raw or 0:.0%} of raw read",
                         r.missing(case_id, "orbax", "jaxpoint", "raw read of jaxpoint files")))
    for case_id in r.ids("restore-warm/"):
        speedup = _ratio(r.median(case_id, "orbax"), r.median(case_id, "jaxpoint"))
        of_np = _ratio(r.median(case_id, "np.load"), r.median(case_id, "jaxpoint"))
        is_met = None if speedup is None or of_np is None else speedup >= 2.5 and of_np >= 1
        rows.append(_row(f"2. warm restore ({case_id}): >= 2.5x orbax and >= np.load speed",
                         is_met, f"{speedup or 0:.2f}x orbax, {of_np or 0:.2f}x np.load's speed",
                         r.missing(case_id, "orbax", "jaxpoint", "np.load")))
    return rows or [_row("2. restore", None, "", "no restore case in this run")]


def _memory(r: _Results) -> list[Row]:
    rows = []
    for prefix, limit, what in (("save/", 0.1, "save"), ("restore-cold/", 1.1, "cold restore")):
        for case_id in r.ids(prefix):
            peak = r.median(case_id, "jaxpoint", "peak_over_state")
            rows.append(_row(f"4. {what} peak above baseline ({case_id}): <= {limit}x state",
                             None if peak is None else peak <= limit, f"{peak or 0:.2f}x",
                             r.missing(case_id, "jaxpoint", key="peak_over_state")))
    return rows


def _async(r: _Results) -> list[Row]:
    rows = []
    for case_id in r.ids("async/"):
        blocked = _ratio(r.median(case_id, "jaxpoint", "blocked_s"),
                         r.median(case_id, "orbax", "blocked_s"))
        rows.append(_row(f"5. async save() blocks ({case_id}; the target is at 4 GiB): <= orbax",
                         None if blocked is None else blocked <= 1,
                         f"{blocked or 0:.2f}x orbax's time",
                         r.missing(case_id, "orbax", "jaxpoint", key="blocked_s")))
    for key, what in (("donated_ok", "donated"), ("mutated_ok", "mutated")):
        ok = r.median("async-integrity", "jaxpoint", key)
        rows.append(_row(f"5. checkpoint unchanged when arrays are {what} right after save()",
                         None if ok is None else ok == 1, "pass" if ok else "FAIL",
                         r.missing("async-integrity", "jaxpoint", key=key)))
    growth = r.median("rss", "jaxpoint", "rss_second_half_growth_mib")
    state_mib = (r.state_bytes("rss") or 0) / 2**20
    rows.append(_row(f"5. RSS flat over consecutive async saves (2nd-half growth < "
                     f"{RSS_FLAT_FRACTION:.0%} of the state)",
                     None if growth is None else growth < RSS_FLAT_FRACTION * state_mib,
                     f"{growth or 0:.1f} MiB on a {state_mib:.0f} MiB state",
                     r.missing("rss", "jaxpoint", key="rss_second_half_growth_mib")))
    return rows


def _imports(r: _Results) -> list[Row]:
    share = _ratio(r.median("import", "jaxpoint", "added_s"),
                   r.median("import", "orbax", "added_s"))
    return [_row("6. `import jaxpoint.core` adds <= 50% of what `import orbax.checkpoint` adds",
                 None if share is None else share <= 0.5, f"{share or 0:.0%}",
                 r.missing("import", "orbax", "jaxpoint", key="added_s"))]


def evaluate(results: dict[str, Any]) -> list[Row]:
    r = _Results(results)
    return [
        *_durable_save(r), *_restore(r),
        *_speedup_rows(r, "small-leaves/save/small-10000x", 10, "3. save of 10,000 x 4 KiB"),
        *_speedup_rows(r, "small-leaves/restore-cold/small-10000x", 10,
                       "3. restore of 10,000 x 4 KiB"),
        *_memory(r), *_async(r), *_imports(r),
        *_speedup_rows(r, "two-process/", 1.5, "7. two processes"),
        _row("8. GPU: async save blocks <= 1.2x a device-to-host copy; restore >= 0.8x "
             "read + host-to-device", None, "",
             "measured apart, on a GPU machine: `python -m benchmarks.gpu` (see the GPU section)"),
    ]
