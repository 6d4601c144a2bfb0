"""Fixtures for the report area: one quality evaluator per test session (the network is built once).
S3 tests use the shared ``s3`` fixture (tests/s3_server.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def evaluator():
    from stylecore.quality import get_evaluator

    return get_evaluator("random:0", device="cpu")  # the default size, shared with the flow test

