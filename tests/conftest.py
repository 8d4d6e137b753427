"""Shared fixtures: seeded generators, the real public datasets, a throwaway pseudonym key."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = PROJECT_ROOT.parent / "shared" / "data"
TEST_KEY = "test-key-not-secret"  # the same key as ../conftest.py sets


@pytest.fixture(autouse=True, scope="session")
def _pseudonym_key(tmp_path_factory):
    """Tests never touch the user's key file: a fixed key for the whole session."""
    old = os.environ.get("RESEARCH_PSEUDONYM_KEY")
    os.environ["RESEARCH_PSEUDONYM_KEY"] = TEST_KEY
    yield
    if old is None:
        os.environ.pop("RESEARCH_PSEUDONYM_KEY", None)
    else:
        os.environ["RESEARCH_PSEUDONYM_KEY"] = old


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)


def require_real_data(*parts: str) -> Path:
    """Path to a file or folder under ../shared/data.

    Missing data skips the test with the reason, unless RESEARCH_REQUIRE_REAL_DATA=1
    (set by .ci/run), where it fails: CI must never pass by skipping the real data.
    """
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        message = f"real dataset not found: {path} (the public test data lives in ../shared/data beside the project)"
        if os.environ.get("RESEARCH_REQUIRE_REAL_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def real_data() -> Path:
    """The folder of real public datasets (../shared/data); see :func:`require_real_data`."""
    return require_real_data()
