"""The DuckDB warehouse: idempotent loads, quarantine, cohorts (research.warehouse)."""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from research.errors import ResearchError
from research.ingest.base import IngestResult, make_rejects
from research.pseudonym import Pseudonymiser
from research.warehouse import Warehouse
from tests.conftest import require_real_data

P = Pseudonymiser(key=b"test")


def _result(name="f.txt", ids=("a1", "a2", "a3"), bad_outcome_at=None):
    n = len(ids)
    attempts = pd.DataFrame(
        {
            "attempt_id": list(ids),
            "learner_id": [P.one("Stu_1")] * n,
            "item_id": "i1",
            "step_id": "s1",
            "attempt": range(1, n + 1),
            "outcome": ["incorrect"] * (n - 1) + ["correct"],
            "timestamp": pd.date_range("2026-01-01", periods=n, freq="min"),
            "source_file": name,
            "source_line": range(2, n + 2),
        }
    )
    if bad_outcome_at is not None:
        attempts.loc[bad_outcome_at, "outcome"] = "maybe"
    kcs = pd.DataFrame({"attempt_id": list(ids), "kc_model": "Default", "kc": "K1", "source_file": name, "source_line": range(2, n + 2)})
    skipped = make_rejects(
        pd.DataFrame({"line": [n + 2], "what": ["page view"]}), table_name="attempts", source_file=name,
        line="line", column="Outcome", reason="blank outcome: not an attempt", kind="skipped",
    )
    return IngestResult(name, "test", n + 1, {"attempts": attempts, "attempt_kcs": kcs}, skipped)


def test_load_counts_every_row_and_quarantines_the_rest(tmp_path):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        summary = wh.load(_result(bad_outcome_at=1), cohort="c1", file_sha256="h1")
        t = summary.tables["attempts"]
        assert (t.n_read, t.n_loaded, t.n_rejected, t.n_skipped) == (4, 2, 1, 1)
        k = summary.tables["attempt_kcs"]
        assert (k.n_loaded, k.n_rejected) == (2, 1)  # the KC row of the rejected attempt is not orphaned silently
        q = wh.table("quarantine", "c1")
        assert len(q) == 3
        bad = q[(q["table_name"] == "attempts") & (q["kind"] == "rejected")].iloc[0]
        assert (bad["source_file"], bad["source_line"], bad["column"]) == ("f.txt", 3, "outcome")
        assert "maybe" in bad["reason"]
        assert json.loads(bad["raw"]) == {"outcome": "maybe"}  # the offending value only, never the row
        assert set(q["kind"]) == {"rejected", "skipped"}
        assert len(wh.table("attempts", "c1")) == 2
        assert "rejected 1" in str(summary.lines())


def test_rows_already_present_are_not_inserted_twice(tmp_path):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.load(_result(ids=("a1", "a2")), cohort="c1", file_sha256="h1")
        s = wh.load(_result("g.txt", ids=("a2", "a3")), cohort="c1", file_sha256="h2")
        assert s.tables["attempts"].n_already_present == 1
        assert s.tables["attempts"].n_loaded == 1
        assert sorted(wh.table("attempts", "c1")["attempt_id"]) == ["a1", "a2", "a3"]
        # the same ids in another cohort are another cohort's rows
        wh.load(_result(ids=("a1",)), cohort="c2", file_sha256="h1")
        assert wh.cohorts()["cohort"].tolist() == ["c1", "c2"]


def test_a_failed_load_leaves_nothing_behind(tmp_path, monkeypatch):
    with Warehouse(tmp_path / "w.duckdb") as wh:
        import research.warehouse as module

        real = module.check_relation

        def fail_on_kcs(con, source, columns, schema, **kw):
            if schema.name == "attempt_kcs":  # attempts are already inserted when this fails
                raise RuntimeError("disk full")
            return real(con, source, columns, schema, **kw)

        monkeypatch.setattr(module, "check_relation", fail_on_kcs)
        with pytest.raises(RuntimeError, match="disk full"):
            wh.load(_result(), cohort="c1", file_sha256="h1")
        assert wh.table("attempts", "c1").empty and wh.table("loads", "c1").empty


def test_read_only_warehouse_that_does_not_exist_says_how_to_create_it(tmp_path):
    with pytest.raises(ResearchError, match="research ingest"):
        Warehouse(tmp_path / "missing.duckdb", read_only=True)


def test_unknown_table_lists_valid_tables(tmp_path):
    with Warehouse(tmp_path / "w.duckdb") as wh, pytest.raises(ResearchError, match="valid tables: attempts"):
        wh.table("attempt")


def _raw_counts(path):
    """Independent counts straight from the raw DataShop transaction file."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    header, body = rows[0], rows[1:]
    col = {name: header.index(name) for name in ("Anon Student Id", "Problem Name", "Step Name")}
    kc_original = header.index("KC (Original)")
    return {
        "rows": len(body),
        "learners": len({r[col["Anon Student Id"]] for r in body}),
        "steps": len({(r[col["Problem Name"]], r[col["Step Name"]]) for r in body}),
        "kcs_original": len({kc for r in body for kc in r[kc_original].split("~~") if kc}),
    }


def test_ds76_transactions_ingest_with_the_counts_of_the_file(tmp_path):
    path = require_real_data("datashop_ds76_geometry_area", "ds76_tx_All_Data_74_2018_0912_070949_partial_7students.txt")
    expected = _raw_counts(path)
    assert (expected["rows"], expected["learners"]) == (492, 7)  # as PROVENANCE.md gives
    with Warehouse(tmp_path / "w.duckdb") as wh:
        summary = wh.ingest([path], cohort="ds76")
        a = wh.table("attempts", "ds76")
        k = wh.table("attempt_kcs", "ds76")
        q = wh.table("quarantine", "ds76")
        assert len(a) + len(q[q["table_name"] == "attempts"]) == expected["rows"]
        assert len(a) == expected["rows"]
        assert a["learner_id"].nunique() == expected["learners"]
        assert a[["item_id", "step_id"]].drop_duplicates().shape[0] == expected["steps"]
        assert k.loc[k["kc_model"] == "Original", "kc"].nunique() == expected["kcs_original"]
        assert k["kc_model"].nunique() >= 30
        again = wh.ingest([path], cohort="ds76")
        assert again.files[0].status == "already loaded" and len(wh.table("attempts", "ds76")) == len(a)
        assert summary.n_rejected == 0


def test_no_raw_learner_id_reaches_any_table(tmp_path):
    path = require_real_data("datashop_ds96_student_step_and_tx", "ds96_tx_export_example.txt")
    raw_ids = set(pd.read_csv(path, sep="\t", usecols=["Anon Student Id"], dtype=str)["Anon Student Id"])
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.ingest([path], cohort="ds96")
        for table in ("attempts", "attempt_kcs", "quarantine", "loads"):
            frame = wh.table(table)
            text = frame.astype(str).to_csv(index=False)
            assert not any(r in text for r in raw_ids), table
    assert not any(r.encode() in (tmp_path / "w.duckdb").read_bytes() for r in raw_ids)


def test_a_copy_of_a_loaded_file_is_already_loaded_under_any_name_and_options(tmp_path, monkeypatch):
    """A path the cohort has not seen is read while it is hashed; a copy of loaded content is still
    skipped whole, even when the options given for it would not read it; a path seen before is
    hashed first and, unchanged, never read."""
    import shutil

    from research import ingest
    from research.simulate import simulate_cohort

    tx = simulate_cohort(n_learners=5, seed=2, cohort="c", planted=False).write(tmp_path / "a", formats=("datashop",))["datashop"]
    copy = tmp_path / "b" / "renamed.txt"
    copy.parent.mkdir()
    shutil.copy(tx, copy)
    with Warehouse(tmp_path / "w.duckdb") as wh:
        first = wh.ingest([tx], cohort="c")
        n_loads = wh.con.execute("SELECT count(*) FROM loads").fetchall()[0][0]
        assert first.files[0].status == "loaded"
        assert wh.ingest([copy], cohort="c").files[0].status == "already loaded"
        assert wh.ingest([copy], cohort="c", options={"bogus": 1}).files[0].status == "already loaded"
        with pytest.raises(ResearchError, match="bogus"):
            wh.ingest([copy], cohort="other", options={"bogus": 1})  # content new to that cohort: the error stands
        reads = []
        real = ingest.read_file
        monkeypatch.setattr(ingest, "read_file", lambda *a, **k: reads.append(a) or real(*a, **k))
        assert wh.ingest([tx], cohort="c").files[0].status == "already loaded"
        assert reads == []  # the path was loaded before: hashed, found, not read
        assert wh.con.execute("SELECT count(*) FROM loads").fetchall()[0][0] == n_loads


@pytest.mark.parametrize("own", [False, True])
def test_kc_rows_of_an_attempt_duckdb_rejects_are_quarantined_however_the_result_is_marked(tmp_path, own):
    """An adapter that builds KC rows from its own attempts only skips the orphan check when every attempt
    went in; an attempt the schema check rejects still takes its KC rows to quarantine."""
    result = _result(bad_outcome_at=1)
    result.kcs_of_own_attempts = own
    with Warehouse(tmp_path / "w.duckdb") as wh:
        k = wh.load(result, cohort="c1", file_sha256="h1").tables["attempt_kcs"]
        assert (k.n_loaded, k.n_rejected) == (2, 1)
        assert set(wh.table("attempt_kcs", "c1")["attempt_id"]) == {"a1", "a3"}


def test_datashop_rows_the_adapter_rejects_bring_no_kc_rows(tmp_path):
    """Rows the DataShop adapter rejects (an unparseable time, an unknown outcome, a repeated id) or skips
    (not an attempt) leave no KC row behind and no orphan: the KC rows are exactly the loaded attempts'."""
    from research.simulate import simulate_cohort

    tx = simulate_cohort(n_learners=6, seed=9, cohort="c", planted=False).write(tmp_path / "a", formats=("datashop",))["datashop"]
    lines = tx.read_text(encoding="utf-8").splitlines()
    head = lines[0].split("\t")
    spoil = {1: ("Time", "yesterday"), 2: ("Outcome", "MAYBE"), 3: ("Outcome", ""), 4: ("Transaction Id", None)}
    for i, (column, value) in spoil.items():
        cells = lines[i].split("\t")
        cells[head.index(column)] = lines[5].split("\t")[head.index(column)] if value is None else value  # line 5's id
        lines[i] = "\t".join(cells)
    tx.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with Warehouse(tmp_path / "w.duckdb") as wh:
        s = wh.ingest([tx], cohort="c").files[0]
        kept = set(wh.table("attempts", "c")["attempt_id"])
        kcs = wh.table("attempt_kcs", "c")
        assert set(kcs["attempt_id"]) == kept and len(kept) == len(lines) - 1 - 4
        assert s.tables["attempts"].n_rejected == 3 and s.tables["attempts"].n_skipped == 1
        assert s.tables["attempt_kcs"].n_rejected == 0  # none orphaned: the adapter never made them
