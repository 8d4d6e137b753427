"""The one advisory-lock implementation (research.locks) and its users."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from research.locks import LockedError, file_lock
from research.pipeline import CohortLock
from research.report_index import reports_lock

HOLD = "import sys,time; from research.locks import file_lock\nwith file_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(float(sys.argv[2]))\n"


def _holder(path, seconds):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_timeout_gives_up_and_names_the_holder(tmp_path):
    path = tmp_path / ".c1.lock"  # the run lock of cohort C1 (and c1: names folded)
    p = _holder(path, 3)
    try:
        t0 = time.monotonic()
        with pytest.raises(LockedError, match=r"the thing is in use by another process \(pid \d+ since .*\) after waiting 0.3 s"):
            with file_lock(path, timeout=0.3, what="the thing"):
                pass
        assert 0.25 <= time.monotonic() - t0 < 2
        with pytest.raises(LockedError, match=r"cohort 'C1' is being run by another process \(pid \d+ since .*\); skipped"):
            with CohortLock(tmp_path, "C1"):
                pass
    finally:
        p.kill()
        p.wait()


def test_waiting_lock_gets_its_turn(tmp_path):
    p = _holder(tmp_path / ".index.lock", 0.5)
    try:
        t0 = time.monotonic()
        with reports_lock(tmp_path):
            waited = time.monotonic() - t0
        with reports_lock(tmp_path, timeout=0):  # free again at once
            pass
    finally:
        p.wait()
    assert waited >= 0.2


def test_lock_is_released_after_an_error_and_reentered(tmp_path):
    with pytest.raises(RuntimeError):
        with file_lock(tmp_path / "y.lock", timeout=0):
            raise RuntimeError("boom")
    with CohortLock(tmp_path, "c2"), file_lock(tmp_path / "y.lock", timeout=0):
        pass


def test_ingest_waits_for_the_warehouse_writer_and_says_locked_past_the_time_out(tmp_path, monkeypatch):
    from pathlib import Path

    from research.cohort_config import load_config
    from research.pipeline import ingest_sources

    cfg = load_config(Path(__file__).resolve().parents[1] / "examples" / "cohorts" / "example.yaml")
    wh = tmp_path / "w.duckdb"
    monkeypatch.setenv("RESEARCH_WAREHOUSE_WAIT", "0.2")
    p = _holder(tmp_path / ".w.duckdb.write.lock", 3)
    try:
        with pytest.raises(LockedError, match=r"the warehouse .*w\.duckdb is in use by another process"):
            ingest_sources(cfg, wh)
        assert not wh.exists()  # nothing was opened while another process wrote
    finally:
        p.kill()
        p.wait()
    assert len(ingest_sources(cfg, wh).files) == len(cfg.sources)


def test_three_cohorts_ingest_into_one_warehouse_at_the_same_time(tmp_path):
    """Real `research ingest` processes of three cohorts started together: all queue for the write and all land."""
    import os
    from pathlib import Path

    import duckdb

    ex = Path(__file__).resolve().parents[1] / "examples"
    wh = tmp_path / "w.duckdb"
    procs = [subprocess.Popen([sys.executable, "-m", "research.cli", "ingest", str(ex / "data" / "attempts.csv"),
                               "--mapping", str(ex / "attempts.mapping.yaml"), "--cohort", f"c{i}", "--warehouse", str(wh)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | {"RESEARCH_WAREHOUSE_WAIT": "60"})
             for i in range(3)]
    outs = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in outs), outs
    with duckdb.connect(str(wh), read_only=True) as con:
        counts = dict(con.execute("SELECT cohort, count(*) FROM attempts GROUP BY cohort").fetchall())
    assert counts == {"c0": 10, "c1": 10, "c2": 10}


READER = """
import sys, time
from research.warehouse import Warehouse
with Warehouse(sys.argv[1], read_only=True) as wh:
    print("open", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_readers_share_the_warehouse_and_a_writer_waits_for_them(tmp_path, monkeypatch):
    """A notebook reading the warehouse and an ingest writing it queue for each other instead of failing."""
    from research.warehouse import Warehouse

    wh = tmp_path / "w.duckdb"
    Warehouse(wh).close()
    reader = subprocess.Popen([sys.executable, "-c", READER, str(wh), "3"], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "open"
    with Warehouse(wh, read_only=True) as other:  # a second reader goes in at once
        assert other.cohorts().empty
    monkeypatch.setenv("RESEARCH_WAREHOUSE_WAIT", "0.3")
    with pytest.raises(LockedError, match="the warehouse .* is in use by another process .*after waiting 0.3 s"):
        Warehouse(wh)
    monkeypatch.setenv("RESEARCH_WAREHOUSE_WAIT", "60")
    t0 = time.monotonic()
    with Warehouse(wh) as writer:  # waits for the reader to close, then writes
        assert writer.cohorts().empty
    assert reader.wait(timeout=60) == 0 and time.monotonic() - t0 > 1.0
