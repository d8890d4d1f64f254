"""Suite-wide set-up: 8 virtual CPU devices before anything imports jax, and the
real S3/GCS loopback servers as fixtures (tests/servers)."""

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Read once per process on first GCS use: set before any gcs kvstore opens.
os.environ.setdefault("GOOGLE_AUTH_TOKEN_FOR_TESTING", "x")

pytest_plugins = ["servers.fixtures"]
