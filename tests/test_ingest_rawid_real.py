"""Raw-id scan on real exports, for every format h5 reads: DataShop transactions and
student-step exports, and the same learners through CSV and Parquet mappings.

The scan (:mod:`tests.rawid`) covers the warehouse's tables and file bytes, the command's
stdout and stderr, and a corrected re-ingest (the correction path writes too).
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import pandas as pd
import pytest

from research.cli import main
from tests.conftest import require_real_data
from tests.rawid import assert_no_raw_ids

DS96 = ("datashop_ds96_student_step_and_tx",)


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def raw_ids(path) -> list[str]:
    return sorted(pd.read_csv(path, sep="\t", usecols=["Anon Student Id"], dtype=str)["Anon Student Id"].dropna().unique())


@pytest.mark.parametrize("parts", [
    (*DS96, "ds96_tx_export_example.txt"),
    (*DS96, "ds96_student_step_export.txt"),
    ("datashop_ds76_geometry_area", "ds76_student_step_partial_4students_48kcmodels.txt"),
    ("oli_chemistry_datashop_tx", "oli_general_chemistry_1_2021_tx.txt"),
])
def test_datashop_exports_leave_no_raw_id(tmp_path, parts):
    path = require_real_data(*parts)
    ids = raw_ids(path)
    assert ids
    wh = tmp_path / "w.duckdb"
    rc, out, err = run("ingest", path, "--cohort", "real", "--warehouse", wh)
    assert rc in (0, 2), err
    rc2, out2, err2 = run("validate", path)
    rc3, out3, err3 = run("cohorts", "--warehouse", wh)
    assert_no_raw_ids(ids, warehouse=wh, texts=[out, err, out2, err2, out3, err3])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_csv_and_parquet_mappings_leave_no_raw_id(tmp_path, suffix):
    src = require_real_data(*DS96, "ds96_tx_export_example.txt")
    tx = pd.read_csv(src, sep="\t", dtype=str, usecols=["Anon Student Id", "Session Id", "Time", "Problem Name", "Step Name", "Outcome", "KC (Default)"])
    tx = tx[tx["Outcome"].isin(["CORRECT", "INCORRECT", "HINT"])]
    tx["Full name"] = "Name of " + tx["Anon Student Id"]  # an unmapped column must never be stored
    path = tmp_path / f"ds96{suffix}"
    if suffix == ".csv":
        tx.to_csv(path, index=False)
    else:
        tx.to_parquet(path, index=False)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "table: attempts\ncolumns: {learner_id: Anon Student Id, session_id: Session Id, timestamp: Time, item_id: Problem Name,"
        " step_id: Step Name, outcome: Outcome}\nvalues: {outcome: {CORRECT: correct, INCORRECT: incorrect, HINT: hint}}\n"
        "kcs: {Default: KC (Default)}\n", encoding="utf-8")
    wh = tmp_path / "w.duckdb"
    rc, out, err = run("ingest", path, "--cohort", "real", "--mapping", mapping, "--warehouse", wh)
    assert rc in (0, 2), err
    assert f"attempts: read {len(tx):,}" in out
    # a corrected version of the file (one outcome flipped) goes through the replacement path
    tx.iloc[0, tx.columns.get_loc("Outcome")] = "HINT" if tx.iloc[0]["Outcome"] != "HINT" else "CORRECT"
    tx.to_csv(path, index=False) if suffix == ".csv" else tx.to_parquet(path, index=False)
    rc2, out2, err2 = run("ingest", path, "--cohort", "real", "--mapping", mapping, "--warehouse", wh)
    assert rc2 in (0, 2) and "replaces the earlier version" in out2
    ids = sorted(tx["Anon Student Id"].unique())
    assert_no_raw_ids(ids + sorted(tx["Full name"].unique()), warehouse=wh, texts=[out, err, out2, err2])
