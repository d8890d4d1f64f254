"""Entry point: `python -m benchmarks.run [--quick] [--cases ...] [--libraries jaxpoint,orbax]`.

Runs every selected case for every selected library plus the baselines, each trial in
a fresh process, then writes `benchmarks/results/<timestamp>.{json,md}`, `latest.{json,md}`
and (after a complete full run, or with --update-docs) the generated section of
`docs/performance.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fcntl
import os
import sys
import time

from benchmarks import cases, machine, report
from benchmarks.runner import Runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")
SCRATCH = os.path.join(RESULTS, "tmp")  # git-ignored; holds checkpoints and trial logs
DOCS = os.path.join(REPO, "docs", "performance.md")
LIBRARIES = ("jaxpoint", "orbax")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="jaxpoint and orbax-checkpoint side by side, with raw-disk baselines.")
    parser.add_argument("--quick", action="store_true",
                        help="256 MiB states and fewer repetitions; under 3 minutes")
    parser.add_argument("--cases", nargs="+", metavar="GROUP",
                        help=f"case groups to run (default: all): {', '.join(cases.GROUPS)}")
    parser.add_argument("--libraries", default=",".join(LIBRARIES),
                        help="comma-separated, from: jaxpoint, orbax (default: both)")
    parser.add_argument("--reps", type=int, help="override every case's repetitions")
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--update-docs", action="store_true",
                      help="rewrite docs/performance.md even for a quick or partial run")
    docs.add_argument("--no-docs", action="store_true", help="leave docs/performance.md alone")
    parser.add_argument("--keep-scratch", action="store_true",
                        help=f"keep checkpoints and logs in {os.path.relpath(SCRATCH, REPO)}")
    args = parser.parse_args(argv)
    libraries = {name.strip() for name in args.libraries.split(",") if name.strip()}
    if not libraries or not libraries <= set(LIBRARIES):
        parser.error(f"Expected --libraries from {', '.join(LIBRARIES)}; got {args.libraries!r}.")
    args.libraries = libraries
    if args.reps is not None and args.reps < 1:
        parser.error(f"Expected --reps of at least 1; got {args.reps}.")
    return args


def _lock_results() -> int:
    """Hold an exclusive lock on results/ for the whole run; returns the descriptor."""
    os.makedirs(RESULTS, exist_ok=True)
    fd = os.open(RESULTS, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            f"Expected no other benchmark run, but one holds {RESULTS}. Two runs would share "
            "its scratch folder and slow each other down; wait for the other one to finish."
        ) from None
    return fd


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    lock = _lock_results()
    selected = cases.select(cases.catalog(quick=args.quick, libraries=args.libraries), args.cases)
    if args.reps is not None:
        selected = [dataclasses.replace(c, reps=args.reps) for c in selected]
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    progress(f"{len(selected)} cases, libraries: {', '.join(sorted(args.libraries))}, "
             f"{'quick' if args.quick else 'full'} mode")
    meta = machine.describe(repo=REPO, scratch=RESULTS)
    runner = Runner(repo=REPO, scratch=SCRATCH, progress=progress)
    try:
        results = runner.run(selected)
    finally:
        if not args.keep_scratch:
            runner.remove_data()
    meta.update(mode="quick" if args.quick else "full", libraries=sorted(args.libraries),
                elapsed_s=time.perf_counter() - started, load_average_end=machine.load_average())
    data = report.to_json(results, meta)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    markdown_path = report.write(data, results_dir=RESULTS, stamp=stamp)
    # Only a complete full run speaks for the project unless asked otherwise.
    is_complete = not (args.quick or args.cases) and args.libraries == set(LIBRARIES)
    if args.update_docs or (is_complete and not args.no_docs):
        report.update_docs(data, DOCS)
    report.print_summary(data, markdown_path)
    os.close(lock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
