"""Fixtures shared by the core tests."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from jaxpoint.core.checkpointers.legacy_forms import forget_warnings

_LEGACY_LOGGER = "jaxpoint.core.checkpointers.legacy_forms"


@pytest.fixture
def legacy_deprecations(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """Returns a function listing the warnings Orbax's legacy call forms logged so far.

    Each form warns once per process, so the record of forms already warned is cleared
    first: what the test sees is its own calls' warnings.
    """
    forget_warnings()
    caplog.set_level(logging.WARNING)
    return lambda: [r.getMessage() for r in caplog.records
                    if r.name == _LEGACY_LOGGER and r.levelno == logging.WARNING]
