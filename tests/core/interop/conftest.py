"""Fixtures for the Orbax interop tests.

XLA reads XLA_FLAGS when JAX creates its CPU backend, so the virtual device count is set
here at import time, before any test asks for devices. The root conftest should do this
for the whole suite; until then this keeps the interop tests on 8 devices.
"""

import os

_DEVICE_FLAG = "--xla_force_host_platform_device_count"
if _DEVICE_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_DEVICE_FLAG}=8".strip()

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def eight_cpu_devices() -> None:
    """Fails (never skips) when JAX started before the flag above could take effect."""
    count = jax.device_count()
    assert count == 8, (
        f"expected 8 virtual CPU devices, found {count}: set XLA_FLAGS="
        f"{_DEVICE_FLAG}=8 before JAX initialises its backend"
    )
