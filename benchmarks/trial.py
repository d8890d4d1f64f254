"""One trial in a fresh process: `python -m benchmarks.trial SPEC.json RESULT.json`.

The spec names an operation from `workloads` (a library under test) or `baselines`; the
result file gets {"metrics", "info"} or, on failure, {"error"} (with the traceback on
stderr) and the process exits with status 1.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

from benchmarks import baselines, workloads

OPERATIONS = {**workloads.OPERATIONS, **baselines.OPERATIONS}


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    with open(spec_path) as file:
        spec = json.load(file)
    try:
        result = OPERATIONS[spec["op"]](spec)
        status = 0
    except BaseException as error:  # the parent turns this into a failed row
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"}
        status = 1
    with open(result_path, "w") as file:
        json.dump(result, file)
    return status


if __name__ == "__main__":
    exit_status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Every operation has closed its manager; skipping interpreter teardown (jax and
    # TensorStore threads) saves 1-2 s per trial, which is what keeps quick mode quick.
    os._exit(exit_status)
