"""Faults of the machine (research.faults): damaged vs locked warehouse, full disk, unexpected errors; never a traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import duckdb
import pytest

from research.faults import DiskFull, WarehouseCorrupt, WarehouseLocked, is_disk_full, warehouse_open_error
from research.warehouse import Warehouse


def _cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "research.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def good_warehouse(tmp_path_factory):
    path = tmp_path_factory.mktemp("wh") / "good.duckdb"
    with Warehouse(path):
        pass
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE filler AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(200000)")
    con.close()
    return path


def _damaged(good, tmp_path):
    data = good.read_bytes()
    variants = {
        "truncated": data[: len(data) // 3],
        "header-cut": data[:5000],
        "empty": b"",
        "garbage": os.urandom(20000),
        "sqlite": b"SQLite format 3\x00" + bytes(8000),
    }
    flipped = bytearray(data)
    flipped[100:4000] = os.urandom(3900)
    variants["checksum"] = bytes(flipped)
    paths = {}
    for name, content in variants.items():
        p = tmp_path / f"{name}.duckdb"
        p.write_bytes(content)
        paths[name] = p
    return paths


def test_a_damaged_warehouse_says_so_and_how_to_rebuild_it(good_warehouse, tmp_path):
    for name, path in _damaged(good_warehouse, tmp_path).items():
        for read_only in (True, False):
            with pytest.raises(WarehouseCorrupt, match="damaged or is not a DuckDB database.*rebuild it from the raw exports"):
                Warehouse(path, read_only=read_only)
        out = _cli("cohorts", "--warehouse", str(path))
        assert out.returncode == 1 and "damaged" in out.stderr and "Traceback" not in out.stderr, (name, out.stderr)
        if name == "sqlite":
            assert "an SQLite database" in out.stderr


HOLD = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('holding', flush=True); time.sleep(60)"


def test_a_locked_warehouse_says_another_process_has_it_not_that_it_is_damaged(good_warehouse):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(good_warehouse)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        for read_only in (True, False):
            with pytest.raises(WarehouseLocked, match="locked by another process.*in use.*nothing was changed"):
                Warehouse(good_warehouse, read_only=read_only)
        out = _cli("cohorts", "--warehouse", str(good_warehouse))
        assert out.returncode == 1 and "locked by another process" in out.stderr
        assert "damaged" not in out.stderr and "Traceback" not in out.stderr
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.2)
    with Warehouse(good_warehouse, read_only=True):
        pass  # free again


def test_fault_classification():
    assert isinstance(warehouse_open_error("w", duckdb.IOException('Could not set lock on file "w": Conflicting lock is held')), WarehouseLocked)
    assert isinstance(warehouse_open_error("w", duckdb.Error("Corrupt database file: computed checksum 1")), WarehouseCorrupt)
    assert isinstance(warehouse_open_error("w", OSError(errno.ENOSPC, "No space left on device")), DiskFull)
    assert is_disk_full(RuntimeError("x").with_traceback(None)) is False
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert is_disk_full(wrapped)


UNEXPECTED = """
import sys
import research.cli as cli
def boom(args):
    raise KeyError("planted")
cli.cmd_cohorts = boom
parser_builder = cli.build_parser
def build():
    p = parser_builder()
    for action in p._subparsers._group_actions:
        action.choices["cohorts"].set_defaults(func=boom)
    return p
cli.build_parser = build
sys.exit(cli.main(["cohorts"]))
"""


def test_an_unexpected_error_is_one_line_and_a_log_file_never_a_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-c", UNEXPECTED], capture_output=True, text=True,
                         env={**os.environ, "RESEARCH_HOME": str(tmp_path)}, timeout=120)
    assert out.returncode == 3
    assert "Traceback" not in out.stderr and "unexpected KeyError" in out.stderr and "This is a bug" in out.stderr
    logs = list((tmp_path / "data" / "errors").glob("error-*.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text() and "planted" in logs[0].read_text()


def test_run_help_names_language_and_keep_failed():
    out = _cli("run", "--help")
    assert "--language {sv,da,en}" in out.stdout and "--keep-failed N" in out.stdout
