"""The case catalog: what runs, for whom, how often, and which numbers the report shows.

Quick mode (`--quick`) keeps every kind of case but shrinks it (256 MiB dense states,
1,000 small leaves, 128 MiB for bf16 and two processes, 8 saves for RSS), runs fewer
repetitions and no orbax-uncompressed flavor. Issue 6's targets are judged on full runs.
"""

from __future__ import annotations

import dataclasses

from benchmarks.state import GIB, MIB, StateSpec

DENSE_LEAVES = 64


@dataclasses.dataclass(frozen=True, kw_only=True)
class Participant:
    """One column of a comparison: a library flavor or a baseline.

    `source` names whose files a reading participant needs (a flavor or "npy").
    """

    name: str
    op: str
    flavor: str | None = None
    source: str | None = None

    @property
    def is_library(self) -> bool:
        return self.flavor is not None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Metric:
    """A number the report shows. `time` metrics get GB/s and ratios to orbax."""

    key: str
    label: str
    kind: str = "time"  # "time", "value" or "check" (1 = pass)
    unit: str = "s"
    has_throughput: bool = True  # state bytes / seconds means something


@dataclasses.dataclass(frozen=True, kw_only=True)
class Case:
    id: str
    group: str
    title: str
    runner: str  # "trial" (one process), "multihost" (two processes) or "import"
    state: StateSpec | None
    participants: tuple[Participant, ...]
    metrics: tuple[Metric, ...]
    reps: int
    timeout_s: float
    cache: str | None = None
    saves: int = 0
    warmup: bool = False  # one untimed round first (import cost: bytecode caches)

    @property
    def scratch_key(self) -> str:
        """The scratch folder its files live in; shared by cases that reuse checkpoints."""
        if self.runner == "multihost":
            return f"2proc-{self.state.id}"
        return self.state.id if self.state else ""


GROUPS = ("import", "save", "restore-cold", "restore-warm", "async", "async-integrity",
          "small-leaves", "bf16", "two-process", "rss")

SECONDS = Metric(key="seconds", label="time")


def _flavors(libraries: set[str], *, with_uncompressed: bool) -> list[Participant]:
    names = []
    if "jaxpoint" in libraries:
        names.append("jaxpoint")
    if "orbax" in libraries:
        names.append("orbax")
        if with_uncompressed:
            names.append("orbax-uncompressed")
    return [Participant(name=name, op="", flavor=name) for name in names]


def _with_op(participants: list[Participant], op: str) -> tuple[Participant, ...]:
    return tuple(dataclasses.replace(p, op=op) for p in participants)


def _dense_cases(spec: StateSpec, libraries: set[str], *, reps: int, timeout_s: float,
                 async_reps: int, with_uncompressed: bool) -> list[Case]:
    flavors = _flavors(libraries, with_uncompressed=with_uncompressed)
    save = Case(
        id=f"save/{spec.id}", group="save", title=f"durable save, {spec.label}", runner="trial",
        state=spec, reps=reps, timeout_s=timeout_s,
        participants=(*_with_op(flavors, "save"),
                      Participant(name="raw write+fsync", op="raw_write"),
                      Participant(name="np.save+fsync", op="np_save")),
        metrics=(Metric(key="seconds", label="save until durable"),))
    cases = [save]
    for cache in ("cold", "warm"):
        raw_reads = tuple(Participant(name=f"raw read of {p.flavor} files", op="raw_read",
                                      source=p.flavor) for p in flavors)
        cases.append(Case(
            id=f"restore-{cache}/{spec.id}", group=f"restore-{cache}",
            title=f"{cache} restore, {spec.label}", runner="trial", state=spec, reps=reps,
            timeout_s=timeout_s, cache=cache,
            participants=(*_with_op(flavors, "restore"), *raw_reads,
                          Participant(name="np.load", op="np_load", source="npy")),
            metrics=(Metric(key="seconds", label=f"{cache} restore"),)))
    cases.append(Case(
        id=f"async/{spec.id}", group="async", title=f"async save, {spec.label}", runner="trial",
        state=spec, reps=async_reps, timeout_s=timeout_s,
        participants=_with_op(_flavors(libraries, with_uncompressed=False), "async_save"),
        metrics=(Metric(key="blocked_s", label="save() blocks", has_throughput=False),
                 Metric(key="seconds", label="until wait_until_finished"))))
    return cases


def _save_restore(group: str, spec: StateSpec, libraries: set[str], *, reps: int,
                  timeout_s: float) -> list[Case]:
    flavors = _flavors(libraries, with_uncompressed=False)
    return [
        Case(id=f"{group}/save/{spec.id}", group=group, title=f"durable save, {spec.label}",
             runner="trial", state=spec, reps=reps, timeout_s=timeout_s,
             participants=_with_op(flavors, "save"),
             metrics=(Metric(key="seconds", label="save until durable"),)),
        Case(id=f"{group}/restore-cold/{spec.id}", group=group,
             title=f"cold restore, {spec.label}", runner="trial", state=spec, reps=reps,
             timeout_s=timeout_s, cache="cold", participants=_with_op(flavors, "restore"),
             metrics=(Metric(key="seconds", label="cold restore"),)),
    ]


def _two_process_cases(spec: StateSpec, libraries: set[str], *, reps: int,
                       timeout_s: float) -> list[Case]:
    flavors = _flavors(libraries, with_uncompressed=False)
    titles = {"save": "save", "restore": "cold restore, same mesh",
              "restore_resharded": "cold restore onto a different mesh"}
    return [
        Case(id=f"two-process/{op}/{spec.id}", group="two-process",
             title=f"2 processes x 2 devices, {titles[op]}, {spec.label}", runner="multihost",
             state=spec, reps=reps, timeout_s=timeout_s, cache="cold",
             participants=_with_op(flavors, op), metrics=(SECONDS,))
        for op in ("save", "restore", "restore_resharded")
    ]


def _dense(size: int) -> StateSpec:
    return StateSpec(kind="dense", total_bytes=size, leaf_count=DENSE_LEAVES)


def catalog(*, quick: bool, libraries: set[str]) -> list[Case]:
    """Every case of a full or quick run, in the order they run."""
    timeout_s = 150.0 if quick else 900.0
    import_participants = (Participant(name="jax itself", op="import"),
                           *_with_op(_flavors(libraries, with_uncompressed=False), "import"))
    cases = [Case(
        id="import", group="import", title="import cost (fresh interpreter)", runner="import",
        state=None, reps=2 if quick else 7, timeout_s=60.0, warmup=not quick,
        participants=import_participants,
        metrics=(Metric(key="added_s", label="import cost after jax (-X importtime)"),
                 Metric(key="seconds", label="wall: interpreter start + imports")))]
    sizes = [(256 * MIB, 2, 1)] if quick else [(256 * MIB, 5, 3), (GIB, 5, 3), (4 * GIB, 3, 3)]
    for size, reps, async_reps in sizes:
        cases += _dense_cases(_dense(size), libraries, reps=reps, timeout_s=timeout_s,
                              async_reps=async_reps, with_uncompressed=not quick)
    cases.append(Case(
        id="async-integrity", group="async-integrity",
        title="async save, then donate / mutate the arrays at once", runner="trial",
        state=_dense(32 * MIB if quick else 64 * MIB), reps=1, timeout_s=timeout_s,
        participants=_with_op(_flavors(libraries, with_uncompressed=False), "async_integrity"),
        metrics=(Metric(key="donated_ok", label="jax arrays donated after save()", kind="check"),
                 Metric(key="mutated_ok", label="numpy arrays mutated after save()",
                        kind="check"))))
    small = [(1000, 16 * 1024)] if quick else [(10_000, 4096), (2000, 16 * 1024)]
    for count, leaf_bytes in small:
        spec = StateSpec(kind="small", total_bytes=count * leaf_bytes, leaf_count=count)
        cases += _save_restore("small-leaves", spec, libraries, reps=1 if quick else 3,
                               timeout_s=timeout_s)
    mixed = StateSpec(kind="mixed", total_bytes=128 * MIB if quick else GIB, leaf_count=16)
    cases += _save_restore("bf16", mixed, libraries, reps=1 if quick else 3, timeout_s=timeout_s)
    cases += _two_process_cases(_dense(128 * MIB if quick else GIB), libraries,
                                reps=1 if quick else 3, timeout_s=timeout_s)
    cases.append(Case(
        id="rss", group="rss", title="RSS over consecutive async saves, max_to_keep=3",
        runner="trial", state=_dense(32 * MIB if quick else 256 * MIB), reps=1,
        timeout_s=timeout_s, saves=8 if quick else 50,
        participants=_with_op(_flavors(libraries, with_uncompressed=False), "rss_flat"),
        metrics=(Metric(key="rss_growth_per_save_mib", label="RSS growth per save, 2nd half",
                        kind="value", unit="MiB"),
                 Metric(key="rss_end_above_baseline_mib", label="RSS after last save above start",
                        kind="value", unit="MiB"),
                 Metric(key="seconds", label="all saves until finished",
                        has_throughput=False))))
    return cases


def select(cases: list[Case], groups: list[str] | None) -> list[Case]:
    """Cases whose group is named, or starts with a named prefix ("restore", "async")."""
    if not groups:
        return cases
    unknown = [g for g in groups if not any(c == g or c.startswith(g + "-") for c in GROUPS)]
    if unknown:
        raise SystemExit(
            f"Expected case groups from {', '.join(GROUPS)}; got {', '.join(unknown)}.")
    return [c for c in cases if any(c.group == g or c.group.startswith(g + "-") for g in groups)]
