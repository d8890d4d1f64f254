"""Registers the server fixtures for this directory.

Idempotent: once the root conftest lists ``pytest_plugins = ["servers.fixtures"]``,
this finds the plugin already registered and does nothing.
"""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("servers.fixtures")
