"""Benchmark suite: jaxpoint and orbax-checkpoint side by side, with raw-disk baselines.

Run it with `python -m benchmarks.run` (or `make bench` / `make bench-quick`). Every trial
runs in a fresh Python process; see `docs/performance.md` for the methodology.
"""
