"""Fixtures for the report area: one quality evaluator per test session (the network is built once)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def evaluator():
    from stylecore.quality import get_evaluator

    return get_evaluator("random:0", size=128, device="cpu")
