"""Fixtures of the distributed tests (helpers live in distributed_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from distributed_helpers import PROMPTS


@pytest.fixture(scope="module")
def prompts_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path
