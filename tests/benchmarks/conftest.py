"""Fixtures for the benchmark tests."""

from __future__ import annotations

import json

import pytest
from benchmarks_helpers import FIXTURES


@pytest.fixture
def geneval_cases() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "geneval" / "cases.jsonl").open()]
