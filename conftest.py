"""Project-wide pytest set-up, loaded for tests/ and for the notebooks nbval runs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent
TEST_KEY = "test-key-not-secret"
STALE_AFTER_S = 24 * 3600


def _code_digest() -> str:
    """A hash of the code and schemas the demo warehouse is built from."""
    digest = hashlib.sha256()
    for folder, pattern in (("src/research", "**/*.py"), ("data_schema", "**/*.json")):
        for path in sorted((PROJECT_ROOT / folder).glob(pattern)):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def pytest_configure(config):
    """Tests (and the notebooks nbval runs) use their own project home.

    ``RESEARCH_HOME`` points at ``.test-home/<code hash>/``: the demo warehouse and the
    reports the notebooks write live there, never in the developer's ``data/`` or
    ``reports/``, and a change to the code gives a fresh demo. The pseudonym key is a
    fixed test key, never the user's key file.
    """
    if not os.environ.get("RESEARCH_HOME"):
        home = PROJECT_ROOT / ".test-home" / _code_digest()
        home.mkdir(parents=True, exist_ok=True)
        os.environ["RESEARCH_HOME"] = str(home)
        if not hasattr(config, "workerinput"):  # the controller, not an xdist worker
            import shutil
            import time

            # homes of code that has changed since, unused for a day (another test run in this
            # checkout, started before an edit, may still be using its home)
            for stale in home.parent.iterdir():
                if stale != home and stale.is_dir() and time.time() - stale.stat().st_mtime > STALE_AFTER_S:
                    shutil.rmtree(stale, ignore_errors=True)
    os.environ.setdefault("RESEARCH_PSEUDONYM_KEY", TEST_KEY)
    os.environ.setdefault("MPLBACKEND", "Agg")
