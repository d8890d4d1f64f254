"""Suite-wide set-up: 8 virtual CPU devices before anything imports jax, the real S3/GCS
loopback servers as fixtures (tests/servers), and a runner for the docs' code blocks."""

import os
import pathlib
import re
from collections.abc import Callable
from typing import Any

import pytest

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Read once per process on first GCS use: set before any gcs kvstore opens.
os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "x")

pytest_plugins = ["servers.fixtures"]


DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def run_doc_page(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
                 ) -> Callable[..., tuple[list[str], dict[str, Any]]]:
    """`run(page, namespace=None)` runs the python blocks of docs/<page> in order, in one
    namespace, with tmp_path as the working directory; returns the blocks and the namespace
    (pass your own dict to read it even when a block raises)."""
    monkeypatch.chdir(tmp_path)

    def run(page: str, namespace: dict[str, Any] | None = None
            ) -> tuple[list[str], dict[str, Any]]:
        namespace = {} if namespace is None else namespace
        blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)
        for block in blocks:
            exec(compile(block, page, "exec"), namespace)  # noqa: S102
        return blocks, namespace

    return run
