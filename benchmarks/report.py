"""Results as JSON and markdown: `benchmarks/results/` and the generated part of
`docs/performance.md`.

Every number is a ratio or a statistic of repetitions run side by side in one run:
min and median per participant; GB/s is state bytes (1 GB = 10^9 bytes) over the median;
"time / orbax" is the participant's median over orbax's (default settings) in the same
case, so below 1 means faster than orbax.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from typing import Any

from benchmarks import state, targets
from benchmarks.cases import Metric
from benchmarks.runner import CaseResult

DOCS_BEGIN = "<!-- BEGIN GENERATED: benchmarks/run.py writes this section; do not edit -->"
DOCS_END = "<!-- END GENERATED -->"
REFERENCE = "orbax"


def to_json(results: list[CaseResult], meta: dict[str, Any]) -> dict[str, Any]:
    """Everything a run measured, with the cache and memory methods its trials reported."""
    cases = [_case_json(r) for r in results]
    meta = {**meta, "cache_methods": _methods(cases, "cache"),
            "memory_methods": _methods(cases, "memory")}
    data = {"meta": meta, "cases": cases}
    data["targets"] = targets.evaluate(data)
    return data


def _methods(cases: list[dict[str, Any]], key: str) -> str:
    methods = sorted({rep["info"][key] for case in cases for entry in case["participants"]
                      for rep in entry["reps"] if rep["info"].get(key)})
    return ", ".join(methods) or "none recorded"


def _case_json(result: CaseResult) -> dict[str, Any]:
    case = result.case
    return {
        "id": case.id, "group": case.group, "title": case.title, "runner": case.runner,
        "cache": case.cache, "state": case.state.to_json() if case.state else None,
        "state_bytes": state.state_bytes(case.state) if case.state else None,
        "metrics": [dataclasses.asdict(m) for m in case.metrics],
        "participants": [
            {"name": p.participant.name, "flavor": p.participant.flavor, "op": p.participant.op,
             "source": p.participant.source, "error": p.error,
             "reps": [dataclasses.asdict(o) for o in p.outcomes]}
            for p in result.participants],
    }


def _values(entry: dict[str, Any], key: str) -> list[float]:
    return [rep["metrics"][key] for rep in entry["reps"] if key in rep["metrics"]]


def _format(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _median(entry: dict[str, Any] | None, key: str) -> float | None:
    values = _values(entry, key) if entry else []
    return statistics.median(values) if values else None


def _failure(case: dict[str, Any], entry: dict[str, Any]) -> str:
    return f"{entry['name']} case {case['id']} failed: {entry['error']}"


def _notes(case: dict[str, Any], entry: dict[str, Any], metric: Metric) -> str:
    notes = []
    if entry["error"]:
        notes.append(_failure(case, entry))
    file_bytes = _median(entry, "file_bytes")
    if file_bytes is not None:
        notes.append(f"{file_bytes / 2**20:.0f} MiB of files")
    per_process = [rep["info"].get("per_process_s") for rep in entry["reps"]]
    if metric.key == "seconds" and any(per_process):
        notes.append("slowest of 2 processes")
    return "; ".join(notes).replace("|", "\\|").replace("\n", " ")


def _time_rows(case: dict[str, Any], metric: Metric) -> list[str]:
    reference = next((e for e in case["participants"] if e["name"] == REFERENCE), None)
    reference_s = _median(reference, metric.key)
    rows = []
    for entry in case["participants"]:
        values = _values(entry, metric.key)
        median = statistics.median(values) if values else None
        throughput = (f"{case['state_bytes'] / 1e9 / median:.3g}"
                      if median and case["state_bytes"] and metric.has_throughput else "—")
        peak = _median(entry, "peak_over_state") if metric.key == "seconds" else None
        ratio = median / reference_s if median is not None and reference_s else None
        rows.append(f"| {case['title']} | {metric.label} | {entry['name']} | {len(values)} | "
                    f"{_format(min(values) if values else None)} | {_format(median)} | "
                    f"{throughput} | {_format(peak, 2)} | {_format(ratio, 2)} | "
                    f"{_notes(case, entry, metric)} |")
    return rows


def _value_rows(case: dict[str, Any], metric: Metric) -> list[str]:
    rows = []
    for entry in case["participants"]:
        values = _values(entry, metric.key)
        if metric.kind == "check":
            result = "—" if not values else "pass" if min(values) == 1 else "FAIL"
            errors = "; ".join(f"{k}: {v}" for r in entry["reps"]
                               for k, v in r["info"].get("errors", {}).items())
            reused = _median(entry, "donation_reused_buffer")
            detail = [_failure(case, entry)] if entry["error"] else []
            detail += [errors] if errors else []
            if reused is not None and metric.key == "donated_ok":
                detail.append("XLA reused the donated buffer" if reused else
                              "XLA copied instead of reusing the donated buffer")
            rows.append(f"| {case['title']} | {metric.label} | {entry['name']} | {result} | "
                        f"{'; '.join(detail)} |")
        else:
            rows.append(f"| {case['title']} | {metric.label} | {entry['name']} | "
                        f"{_format(min(values) if values else None, 1)} | "
                        f"{_format(statistics.median(values) if values else None, 1)} "
                        f"{metric.unit} | {_failure(case, entry) if entry['error'] else ''} |")
    return rows


def tables(data: dict[str, Any]) -> str:
    """The results as markdown tables (no page title), for results/ and the docs."""
    time_rows, value_rows, check_rows = [], [], []
    for case in data["cases"]:
        for metric_json in case["metrics"]:
            metric = Metric(**metric_json)
            if metric.kind == "time":
                time_rows += _time_rows(case, metric)
            elif metric.kind == "check":
                check_rows += _value_rows(case, metric)
            else:
                value_rows += _value_rows(case, metric)
    meta = data["meta"]
    lines = [
        _header(meta), "",
        "### Timings", "",
        "| case | measure | who | reps | min s | median s | GB/s | peak/state | time / orbax "
        "| notes |",
        "|---|---|---|---|---|---|---|---|---|---|", *time_rows, "",
    ]
    if value_rows:
        lines += ["### Memory over time", "", "| case | measure | who | min | median | notes |",
                  "|---|---|---|---|---|---|", *value_rows, ""]
    if check_rows:
        lines += ["### Correctness checks", "", "| case | check | who | result | notes |",
                  "|---|---|---|---|---|", *check_rows, ""]
    lines += ["### Targets of issue 6", "", "| target | measured | status |", "|---|---|---|",
              *(f"| {t['target']} | {t['measured']} | {t['status']} |" for t in data["targets"]),
              ""]
    return "\n".join(lines)


def _header(meta: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    return "\n".join([
        f"Run of {meta['date']} ({meta['mode']} mode; libraries: {', '.join(meta['libraries'])}; "
        f"commit {meta['commit']}; {meta['elapsed_s']:.0f} s in all).",
        "",
        f"- Machine: {meta['nproc']} CPUs ({meta['cpu_model']}), {meta['memory_gib']} GiB RAM, "
        f"kernel {meta['kernel']}, scratch on {meta['filesystem']}, Python {meta['python']}.",
        f"- Versions: {versions}.",
        f"- Load average (1 / 5 / 15 min) at start: {meta['load_average_start']}, at end: "
        f"{meta['load_average_end']}, on {meta['nproc']} CPUs; a busy machine makes every "
        "number noisy, ratios less so.",
        f"- Cold cache: {meta['cache_methods']}. Peak memory: {meta['memory_methods']}.",
        "- GB/s = state bytes / median time (1 GB = 10^9 B). peak/state = median peak RSS above "
        "the RSS right before the operation, over the state size. time / orbax = median time "
        "over orbax's median (default settings, zstd) in the same case: below 1 is faster.",
    ])


def write(data: dict[str, Any], *, results_dir: str, stamp: str) -> str:
    """Write `<stamp>` and `latest` as JSON and markdown; returns the timestamped .md path."""
    os.makedirs(results_dir, exist_ok=True)
    markdown = "# jaxpoint benchmark results\n\n" + tables(data)
    for name in (stamp, "latest"):
        with open(os.path.join(results_dir, f"{name}.json"), "w") as file:
            json.dump(data, file, indent=1)
        with open(os.path.join(results_dir, f"{name}.md"), "w") as file:
            file.write(markdown)
    return os.path.join(results_dir, f"{stamp}.md")


def update_docs(data: dict[str, Any], docs_path: str) -> None:
    """Replace the generated section of docs/performance.md with this run's tables."""
    with open(docs_path) as file:
        text = file.read()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise SystemExit(f"Expected the markers {DOCS_BEGIN!r} and {DOCS_END!r} in {docs_path}; "
                         "add them around the generated section, or pass --no-docs.")
    before, rest = text.split(DOCS_BEGIN, 1)
    after = rest.split(DOCS_END, 1)[1]
    generated = tables(data).replace("### ", "#### ")
    with open(docs_path, "w") as file:
        file.write(f"{before}{DOCS_BEGIN}\n{generated}\n{DOCS_END}{after}")


def failures(data: dict[str, Any]) -> list[str]:
    return [_failure(case, entry) for case in data["cases"] for entry in case["participants"]
            if entry["error"]]


def print_summary(data: dict[str, Any], markdown_path: str) -> None:
    print(tables(data))
    for line in failures(data):
        print(line)
    print(f"\nWrote {markdown_path} (and latest.md / latest.json beside it).")
