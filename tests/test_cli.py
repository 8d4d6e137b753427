"""The `research` command: help, exit codes, messages without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from research.cli import main
from tests.conftest import require_real_data

COMMANDS = ["ingest", "validate", "cohorts", "forget", "run", "demo", "lab"]


def research(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "research.cli", *map(str, args)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: research " + command in capsys.readouterr().out


def test_top_level_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code in ("0  success", "1  user error", "2  data rejected in part", "3  a notebook failed", "4  a cohort was being run"):
        assert code in out


def test_ingest_real_export_then_list_cohorts(tmp_path):
    path = require_real_data("datashop_ds96_student_step_and_tx", "ds96_tx_export_example.txt")
    wh = tmp_path / "w.duckdb"
    first = research("ingest", path, "--cohort", "ds96", "--warehouse", wh)
    assert first.returncode == 0, first.stderr
    assert "attempts: read 1,873, loaded 1,873" in first.stdout
    again = research("ingest", path, "--cohort", "ds96", "--warehouse", wh)
    assert again.returncode == 0 and "already loaded" in again.stdout
    listed = research("cohorts", "--warehouse", wh)
    assert listed.returncode == 0 and "ds96" in listed.stdout and "1873" in listed.stdout


def test_rows_rejected_in_part_exit_2_with_a_summary(tmp_path):
    raw = tmp_path / "tx.txt"
    header = "Anon Student Id\tSession Id\tTime\tProblem Name\tStep Name\tAttempt At Step\tOutcome\tKC (Default)"
    rows = [
        "Stu_a\ts1\t2026-01-05 10:00:00\tP1\tS1\t1\tINCORRECT\tK1",
        "Stu_a\ts1\t2026-01-05 10:00:09\tP1\tS1\t2\tCORRECT\tK1",
        "Stu_b\ts2\t2026-13-45 99:00:00\tP1\tS1\t1\tCORRECT\tK1",
    ]
    raw.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    out = research("ingest", raw, "--cohort", "c", "--warehouse", tmp_path / "w.duckdb", "--format", "datashop")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "rejected 1" in out.stdout and "Traceback" not in out.stderr
    val = research("validate", raw, "--format", "datashop")
    assert val.returncode == 2 and "line 4" in val.stdout


def test_user_errors_exit_1_with_a_message_and_no_traceback(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = research("ingest", empty, "--cohort", "c", "--warehouse", tmp_path / "w.duckdb")
    assert out.returncode == 1 and "empty.txt" in out.stderr and "Traceback" not in out.stderr
    missing = research("cohorts", "--warehouse", tmp_path / "nope.duckdb")
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    unknown = research("run", "--cohort", "nobody", "--warehouse", tmp_path / "w.duckdb", "--out", tmp_path / "r")
    assert unknown.returncode == 1 and "nobody" in unknown.stderr and "Traceback" not in unknown.stderr
