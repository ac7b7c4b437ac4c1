"""Fixtures for simulator tests: small scenarios on the roofline surrogate (fast, exact)."""
from __future__ import annotations

import pytest

from simkit import BASE, make  # noqa: F401


@pytest.fixture
def scenario():
    return make
