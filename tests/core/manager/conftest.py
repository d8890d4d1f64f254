"""Fixtures for the manager tests: a clean preemption state around every test."""

import pytest
from jaxpoint.core.multihost.preemption import reset_preemption_handler


@pytest.fixture(autouse=True)
def clean_preemption_state():
    """Managers install a SIGTERM handler; each test starts and ends without one."""
    reset_preemption_handler()
    yield
    reset_preemption_handler()
