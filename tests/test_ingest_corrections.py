"""Corrections, pseudonym keys, forget, cohort counts, validate = ingest, warehouse faults, examples.

Everything runs through the real `research` command in process (DuckDB files in tmp_path).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from research.cli import main
from research.cohort import load
from research.pseudonym import Pseudonymiser
from research.warehouse import Warehouse, WarehouseDamaged, WarehouseLocked
from tests.rawid import assert_no_raw_ids

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MAPPING = "table: assessments\ncolumns: {learner_id: s, instrument: t, phase: ph, item_id: i, score: sc, max_score: mx}\n"


def run(*args, env: dict | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with redirect_stdout(out), redirect_stderr(err):
            rc = main([str(a) for a in args])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, out.getvalue(), err.getvalue()


def scores_csv(path: Path, fix: str = "1") -> Path:
    rows = ["s,t,ph,i,sc,mx"] + [f"Stu_raw_{k:03d},T,{ph},q{j},{fix if (k, ph, j) == (1, 'post', 1) else '0'},1"
                                 for k in range(1, 13) for ph in ("pre", "post") for j in (1, 2)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def setup(tmp_path):
    (tmp_path / "m.yaml").write_text(MAPPING, encoding="utf-8")
    return tmp_path, tmp_path / "w.duckdb"


def test_one_byte_score_fix_replaces_the_old_value(setup):
    tmp, wh = setup
    data = scores_csv(tmp / "scores.csv", fix="0")
    assert run("ingest", data, "--cohort", "c", "--mapping", tmp / "m.yaml", "--warehouse", wh)[0] == 0
    scores_csv(data, fix="1")  # one byte changed
    rc, out, _ = run("ingest", data, "--cohort", "c", "--mapping", tmp / "m.yaml", "--warehouse", wh)
    assert rc == 0 and "replaces the earlier version of this file: removed 48 assessments" in out
    with Warehouse(wh, read_only=True) as w:
        a = w.table("assessments", "c")
        rem = w.removals("c")
        loads = w.table("loads", "c")
    assert len(a) == 48 and a["score"].sum() == 1.0  # each observation once, with the newest value
    assert list(rem["action"]) == ["correction"] and rem["n_rows"].iloc[0] == 48 and rem["subject"].iloc[0] == "scores.csv"
    assert loads["file_sha256"].nunique() == 1  # the old version's load record is gone
    # back to the old content: a version of its own again, not "already loaded"
    scores_csv(data, fix="0")
    rc, out, _ = run("ingest", data, "--cohort", "c", "--mapping", tmp / "m.yaml", "--warehouse", wh)
    assert "replaces the earlier version" in out
    assert load("c", wh).assessments["score"].sum() == 0.0


def test_edited_datashop_export_without_row_or_transaction_id_is_stored_once(setup):
    tmp, wh = setup
    head = "Anon Student Id\tTime\tProblem Name\tStep Name\tOutcome\tInput"
    rows = [f"Stu_raw_{k}\t2024-03-01 10:0{k}:00\tp1\ts1\t{'CORRECT' if k % 2 else 'INCORRECT'}\t{k}" for k in range(1, 6)]
    path = tmp / "tx.txt"
    path.write_text("\n".join([head, *rows]) + "\n", encoding="utf-8")
    assert run("ingest", path, "--cohort", "c", "--warehouse", wh)[0] == 0
    rows[2] = rows[2].replace("\t3", "\t33")  # the learner's input corrected
    path.write_text("\n".join([head, *rows]) + "\n", encoding="utf-8")
    assert run("ingest", path, "--cohort", "c", "--warehouse", wh)[0] == 0
    att = load("c", wh).attempts
    assert len(att) == 5 and sorted(att["response"]) == ["1", "2", "33", "4", "5"]


def test_corrected_file_clears_its_old_quarantine_rows(setup):
    tmp, wh = setup
    data = scores_csv(tmp / "scores.csv")
    text = data.read_text(encoding="utf-8").replace("Stu_raw_002,T,pre,q1,0,1", "Stu_raw_002,T,pre,q1,zero,1")
    data.write_text(text, encoding="utf-8")
    assert run("ingest", data, "--cohort", "c", "--mapping", tmp / "m.yaml", "--warehouse", wh)[0] == 2
    with Warehouse(wh, read_only=True) as w:
        assert len(w.table("quarantine", "c")) == 1
    scores_csv(data)
    assert run("ingest", data, "--cohort", "c", "--mapping", tmp / "m.yaml", "--warehouse", wh)[0] == 0
    with Warehouse(wh, read_only=True) as w:
        assert w.table("quarantine", "c").empty and len(w.table("assessments", "c")) == 48
        assert w.removals("c")["table_name"].tolist().count("quarantine") == 1


def test_a_changed_pseudonym_key_is_refused(setup):
    tmp, wh = setup
    data = scores_csv(tmp / "scores.csv")
    assert run("ingest", data, "--cohort", "c", "--mapping", tmp / "m.yaml", "--warehouse", wh)[0] == 0
    other = tmp / "more.csv"
    shutil.copy(data, other)
    other.write_text(data.read_text(encoding="utf-8").replace(",T,", ",T2,"), encoding="utf-8")
    rc, out, err = run("ingest", other, "--cohort", "c", "--mapping", tmp / "m.yaml", "--warehouse", wh,
                       env={"RESEARCH_PSEUDONYM_KEY": "a-different-key"})
    assert rc == 1 and "was loaded with another pseudonym key" in err and "research forget --cohort c" in err
    with Warehouse(wh, read_only=True) as w:
        assert len(w.table("assessments", "c")) == 48  # nothing of the other key's file was loaded
    # another cohort may use another key
    assert run("ingest", other, "--cohort", "d", "--mapping", tmp / "m.yaml", "--warehouse", wh,
               env={"RESEARCH_PSEUDONYM_KEY": "a-different-key"})[0] == 0
    assert Pseudonymiser(key=b"a").fingerprint() != Pseudonymiser(key=b"b").fingerprint()


def test_forget_a_cohort_removes_data_and_reports_with_a_record(setup):
    tmp, wh = setup
    data = scores_csv(tmp / "scores.csv")
    run("ingest", data, "--cohort", "c", "--mapping", tmp / "m.yaml", "--warehouse", wh)
    run("ingest", data, "--cohort", "keep", "--mapping", tmp / "m.yaml", "--warehouse", wh)
    reports = tmp / "reports"
    (reports / "c").mkdir(parents=True)
    (reports / "c" / "report.en.html").write_text("x", encoding="utf-8")
    (reports / "keep").mkdir()
    rc, out, _ = run("forget", "--cohort", "c", "--warehouse", wh, "--out", reports)  # dry run
    assert rc == 0 and "would remove" in out and "nothing changed" in out and (reports / "c").exists()
    rc, out, _ = run("forget", "--cohort", "c", "--warehouse", wh, "--out", reports, "--yes")
    assert rc == 0 and "assessments: 48 row(s)" in out
    assert not (reports / "c").exists() and (reports / "keep").exists()
    con = duckdb.connect(str(wh), read_only=True)
    for (table,) in con.execute("SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'cohort' AND NOT internal").fetchall():
        n = con.execute(f'SELECT count(*) FROM "{table}" WHERE cohort = ?', ["c"]).fetchall()[0][0]
        assert n == 0 or table == "removals", table
    rem = con.execute("SELECT action, table_name, n_rows FROM removals WHERE cohort = 'c'").df()
    assert set(rem["action"]) == {"forget cohort"} and {"assessments", "reports"} <= set(rem["table_name"])
    assert con.execute("SELECT count(*) FROM assessments WHERE cohort = 'keep'").fetchall()[0][0] == 48
    con.close()


def test_forget_one_learner_for_an_erasure_request(setup):
    tmp, wh = setup
    data = scores_csv(tmp / "scores.csv")
    run("ingest", data, "--cohort", "c", "--mapping", tmp / "m.yaml", "--warehouse", wh)
    (tmp / "reports" / "c").mkdir(parents=True)
    who = Pseudonymiser().one("Stu_raw_003")
    rc, _, err = run("forget", "--cohort", "c", "--learner", "Stu_raw_003", "--warehouse", wh, "--yes")
    assert rc == 1 and "takes a pseudonym" in err and "Stu_raw_003" not in err  # a raw id is refused, not echoed
    rc, out, _ = run("forget", "--cohort", "c", "--learner", who, "--warehouse", wh, "--out", tmp / "reports", "--yes")
    assert rc == 0 and "assessments: 4 row(s)" in out and "research run --cohort c" in out
    assert not (tmp / "reports" / "c").exists()  # the reports counted the learner: removed, to be run again
    with Warehouse(wh, read_only=True) as w:
        a = w.table("assessments", "c")
        rem = w.removals("c")
    assert len(a) == 44 and who not in set(a["learner_id"])
    assert rem["subject"].isna().all() and not rem.astype(str).apply(lambda s: s.str.contains(who)).any().any()
    rc, _, err = run("forget", "--cohort", "c", "--learner", who, "--warehouse", wh, "--yes")
    assert rc == 1 and "no learner with pseudonym" in err


def test_cohorts_counts_learners_from_every_table(setup):
    tmp, wh = setup
    run("ingest", scores_csv(tmp / "scores.csv"), "--cohort", "tests-only", "--mapping", tmp / "m.yaml", "--warehouse", wh)
    for m in ("surveys", "learners"):
        d = {"surveys": "survey.csv", "learners": "learners.csv"}[m]
        assert run("ingest", EXAMPLES / "data" / d, "--cohort", f"{m}-only", "--mapping", EXAMPLES / f"{m}.mapping.yaml", "--warehouse", wh)[0] == 0
    rc, out, _ = run("cohorts", "--warehouse", wh)
    table = pd.read_fwf(io.StringIO(out))
    n = dict(zip(table["cohort"], table["n_learners"]))
    assert n == {"learners-only": 3, "surveys-only": 3, "tests-only": 12}


def test_validate_counts_agree_with_ingest(setup):
    tmp, wh = setup
    data = scores_csv(tmp / "scores.csv")
    text = data.read_text(encoding="utf-8").splitlines()
    text[4] = text[4].replace(",0,1", ",x,1")
    text[5] = '"' + text[5]
    text.insert(8, text[7])
    data.write_text("\n".join(text) + "\n", encoding="utf-8")
    rc_v, out_v, _ = run("validate", data, "--mapping", tmp / "m.yaml")
    rc_i, out_i, _ = run("ingest", data, "--cohort", "c", "--mapping", tmp / "m.yaml", "--warehouse", wh)
    counts = lambda out: [line.strip() for line in out.splitlines() if line.strip().startswith("assessments:")]  # noqa: E731
    assert rc_v == rc_i == 2
    assert counts(out_v) == counts(out_i) == ["assessments: read 49, loaded 46, rejected 3, skipped 0, already present 0"]
    assert "line 6" in out_v and "unbalanced quote" in out_v and "line 5" in out_v and "duplicate of line 8" in out_v


def test_locked_and_damaged_warehouse_get_different_messages(tmp_path):
    wh = tmp_path / "w.duckdb"
    Warehouse(wh).close()
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(wh)!r}); print('ok', flush=True); time.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(WarehouseLocked, match=r"is locked by another process \(process \d+\).*Wait for it"):
            Warehouse(wh)
        rc, _, err = run("cohorts", "--warehouse", wh)
        assert rc == 1 and "locked by another process" in err and "is damaged" not in err
    finally:
        holder.kill()
        holder.wait()
    damaged = tmp_path / "d.duckdb"
    data = wh.read_bytes()
    damaged.write_bytes(data[: len(data) // 3])
    junk = tmp_path / "j.duckdb"
    junk.write_bytes(b"not a database at all\n" * 100)
    for bad in (damaged, junk):
        with pytest.raises(WarehouseDamaged, match="is damaged or is not a DuckDB database.*research ingest"):
            Warehouse(bad)
        rc, _, err = run("ingest", scores_csv(tmp_path / "s.csv"), "--cohort", "c", "--mapping", EXAMPLES / "assessments.mapping.yaml", "--warehouse", bad)
        assert rc == 1 and "is damaged" in err and "locked by" not in err and "Traceback" not in err


def test_examples_load_and_attributes_compare_like_gender(tmp_path):
    """Every example mapping under examples/ loads its example data with the documented command."""
    import yaml

    from research.cohort_config import load_config
    from research.estimate.dif import group_comparisons

    wh = tmp_path / "w.duckdb"
    cfg = load_config(EXAMPLES / "cohorts" / "example.yaml")
    assert len(cfg.sources) == 5
    for src in cfg.sources:
        mapping = yaml.safe_load(src.mapping.read_text(encoding="utf-8"))
        assert f"examples/data/{src.path.name}" in src.mapping.read_text(encoding="utf-8")  # the command in its comment
        rc, out, err = run("ingest", src.path, "--cohort", cfg.cohort, "--mapping", src.mapping, "--warehouse", wh)
        assert rc == 0, (src.path, out, err)
        assert f"{mapping['table']}: read" in out and "rejected 0" in out
    data = load("example", wh)
    assert len(data.attempts) == 10 and len(data.assessments) == 12 and len(data.surveys) == 6 and len(data.items) == 2
    # time zones: 09:00:05 in Stockholm (CET) is 08:00:05 UTC; the test's constant time too
    assert data.attempts["timestamp"].min() == pd.Timestamp("2026-02-02 08:00:05")
    assert (data.assessments["timestamp"] == pd.Timestamp("2026-02-01 07:00:00")).all()
    assert data.assessments["score"].sum() == pytest.approx(8.0)  # decimal commas
    assert sorted(data.learners["study_programme"]) == ["Engineering", "Engineering", "Nursing"]
    comps = group_comparisons(data.learners, "learner_id", None, None, None)
    assert "study_programme" in {c[0] for c in comps}  # compared like gender by default
    assert_no_raw_ids(["s-001", "s-002", "s-003"], warehouse=wh)


def test_mapping_errors_name_the_mapping_and_cli_flags(tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("a,b\n1,2\n", encoding="utf-8")
    rc, _, err = run("ingest", data, "--cohort", "c", "--warehouse", tmp_path / "w.duckdb")
    assert rc == 1 and "--mapping FILE" in err and "--format" in err and "options=" not in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("table: assessments\ncolumns: {learner_id: a, instrument: b, phase: b, item_id: b, score: b, max_score: b}\n"
                   "constants: {timestamp: 2026-02-01 08:00 Mars/Olympus}\n", encoding="utf-8")
    rc, _, err = run("ingest", data, "--cohort", "c", "--mapping", bad, "--warehouse", tmp_path / "w.duckdb")
    assert rc == 1 and "constants: 'timestamp'" in err


def test_headerless_file_is_refused_without_printing_its_first_row(tmp_path):
    data = tmp_path / "scores.csv"
    data.write_text("Stu_raw_001,T,pre,q1,1,1\nStu_raw_002,T,pre,q1,1,1\n", encoding="utf-8")
    (tmp_path / "m.yaml").write_text(MAPPING, encoding="utf-8")
    rc, out, err = run("ingest", data, "--cohort", "c", "--mapping", tmp_path / "m.yaml", "--warehouse", tmp_path / "w.duckdb")
    assert rc == 1 and "line 1 is not a header" in err
    assert_no_raw_ids(["Stu_raw_001", "Stu_raw_002"], texts=[out, err])
    tx = tmp_path / "tx.txt"
    tx.write_text("Stu_raw_001\t2024-01-01 10:00:00\tp1\tCORRECT\n", encoding="utf-8")
    rc, out, err = run("ingest", tx, "--cohort", "c", "--format", "datashop", "--warehouse", tmp_path / "w.duckdb")
    assert rc == 1 and "line 1 is not a header" in err
    assert_no_raw_ids(["Stu_raw_001"], texts=[out, err])


def test_warehouse_error_tells_full_disk_lock_and_damage_apart(tmp_path):
    from research.warehouse import warehouse_error

    full = warehouse_error(tmp_path / "w.duckdb", duckdb.IOException('IO Error: Could not write file "w.duckdb": No space left on device'))
    locked = warehouse_error(tmp_path / "w.duckdb", duckdb.IOException('IO Error: Could not set lock on file "w.duckdb": Conflicting lock is held in python (PID 42)'))
    damaged = warehouse_error(tmp_path / "w.duckdb", duckdb.Error("Corrupt database file: computed checksum 1 does not match stored checksum 2"))
    assert "no space left" in str(full) and not isinstance(full, (WarehouseLocked, WarehouseDamaged))
    assert isinstance(locked, WarehouseLocked) and "process 42" in str(locked)
    assert isinstance(damaged, WarehouseDamaged) and "move the file aside" in str(damaged)


def _kc_rows(wh: Warehouse, cohort: str) -> set[tuple]:
    return set(wh.con.execute("SELECT attempt_id, kc_model, kc FROM attempt_kcs WHERE cohort = ?", [cohort]).fetchall())


def test_kc_rows_of_a_first_load_are_recorded_by_model_and_corrections_stay_exact(tmp_path):
    """A first load records its KC rows by KC model (one load_rows row per model, not per KC row);
    a corrected file still leaves exactly the KC rows a fresh load of it gives, and the KC rows
    another file added to the same attempts stay."""
    from research.simulate import simulate_cohort
    from research.warehouse import KCS_BY_ATTEMPT

    sim = simulate_cohort(n_learners=15, seed=7, cohort="c", planted=False)
    tx = sim.write(tmp_path / "a", formats=("datashop",))["datashop"]
    raw = tx.read_text(encoding="utf-8").splitlines()
    head = raw[0].split("\t")
    fine = head.index("KC (Fine)")
    # a second export of the same transactions with one more KC model
    extra = tmp_path / "b" / "with_extra_model.txt"
    extra.parent.mkdir()
    extra.write_text("\n".join([raw[0] + "\tKC (Extra)"] + [ln + f"\tX{i % 3}" for i, ln in enumerate(raw[1:])]) + "\n",
                     encoding="utf-8")
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.ingest([tx], cohort="c")
        lr = wh.con.execute("SELECT table_name, row_key, count(*) FROM load_rows GROUP BY ALL ORDER BY ALL").fetchall()
        assert sorted(lr, key=str) == sorted([("attempts", None, 1), (KCS_BY_ATTEMPT, "Coarse", 1), (KCS_BY_ATTEMPT, "Fine", 1)], key=str)
        wh.ingest([extra], cohort="c")  # attempts already present: its new KC rows are recorded one by one
        n_extra = wh.con.execute("SELECT count(*) FROM attempt_kcs WHERE kc_model = 'Extra'").fetchall()[0][0]
        assert n_extra == len(raw) - 1
        assert wh.con.execute("SELECT count(*) FROM load_rows WHERE table_name = 'attempt_kcs'").fetchall()[0][0] == n_extra
        # the correction: one transaction's Fine KC renamed, the last transaction dropped
        cells = raw[1].split("\t")
        cells[fine] = "renamed KC"
        corrected = [raw[0], "\t".join(cells), *raw[2:-1]]
        tx.write_text("\n".join(corrected) + "\n", encoding="utf-8")
        wh.ingest([tx], cohort="c")
        fresh = tmp_path / "fresh" / tx.name
        fresh.parent.mkdir()
        shutil.copy(tx, fresh)
        wh.ingest([fresh], cohort="fresh")
        got = {r for r in _kc_rows(wh, "c") if r[1] != "Extra"}
        assert got == _kc_rows(wh, "fresh")
        assert any(k == "renamed KC" for _, _, k in got) and len(got) > 0
        # the Extra rows stay on the attempts the corrected file still has; the dropped one's went with it
        assert wh.con.execute("SELECT count(*) FROM attempt_kcs WHERE cohort = 'c' AND kc_model = 'Extra'").fetchall()[0][0] == n_extra - 1
        rem = wh.removals("c")
        assert rem.loc[rem["table_name"] == "attempt_kcs", "n_rows"].sum() >= 2  # the renamed row's old KC and the dropped row's


def _attempt_rows(wh: Warehouse, cohort: str) -> set[tuple]:
    return set(wh.con.execute("SELECT attempt_id, outcome, item_id FROM attempts WHERE cohort = ?", [cohort]).fetchall())


@pytest.mark.parametrize("forget_first", [False, True])
def test_a_table_recorded_whole_gives_back_only_its_own_rows(tmp_path, forget_first):
    """The first load of a table records it whole; corrections of it and of a later file (whose rows are
    recorded by key) each leave exactly what fresh loads of the files give. With ``forget_first`` every
    learner of the first file is forgotten before the second loads into the emptied table: the second
    then records its rows by key, and correcting the first does not take them."""
    from research.simulate import simulate_cohort

    sim = simulate_cohort(n_learners=12, seed=3, cohort="c", planted=False)
    tx = sim.write(tmp_path / "sim", formats=("datashop",))["datashop"]
    raw = tx.read_text(encoding="utf-8").splitlines()
    head = raw[0].split("\t")
    outcome, learner = head.index("Outcome"), head.index("Anon Student Id")
    learners = sorted({ln.split("\t")[learner] for ln in raw[1:]})
    first = [ln for ln in raw[1:] if ln.split("\t")[learner] in learners[:6]]
    second = [ln for ln in raw[1:] if ln.split("\t")[learner] not in learners[:6]]
    a, b = tmp_path / "a" / "tx.txt", tmp_path / "b" / "tx.txt"  # the same name in two folders
    for path, rows in ((a, first), (b, second)):
        path.parent.mkdir()
        path.write_text("\n".join([raw[0], *rows]) + "\n", encoding="utf-8")

    def flip(rows: list[str]) -> list[str]:  # one outcome changed, the last row dropped
        cells = rows[0].split("\t")
        cells[outcome] = "INCORRECT" if cells[outcome] == "CORRECT" else "CORRECT"
        return ["\t".join(cells), *rows[1:-1]]

    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.ingest([a], cohort="c")
        if forget_first:
            for p in wh.con.execute("SELECT DISTINCT learner_id FROM attempts WHERE cohort = 'c'").fetchall():
                wh.forget_learner("c", p[0])
            assert not _attempt_rows(wh, "c")
        wh.ingest([b], cohort="c")
        recorded = wh.con.execute("SELECT count(*) FILTER (row_key IS NULL), count(row_key) FROM load_rows "
                                  "WHERE cohort = 'c' AND table_name = 'attempts'").fetchall()[0]
        assert recorded == (1, len(second))  # the first file whole, the second by key
        for path, rows in ((a, first), (b, second)):
            path.write_text("\n".join([raw[0], *flip(rows)]) + "\n", encoding="utf-8")
            wh.ingest([path], cohort="c")
            rows[:] = flip(rows)
            fresh = []  # the files as they are now, loaded into a cohort of their own
            for k, rs in enumerate((first, second)):
                copy = tmp_path / f"fresh-{path.parent.name}-{k}" / "tx.txt"
                copy.parent.mkdir()
                copy.write_text("\n".join([raw[0], *rs]) + "\n", encoding="utf-8")
                fresh.append(copy)
            wh.ingest(fresh, cohort=f"fresh-{path.parent.name}")
            # (a corrected first file brings its forgotten learners back: it is a new version)
            assert _attempt_rows(wh, "c") == _attempt_rows(wh, f"fresh-{path.parent.name}"), path
            assert _kc_rows(wh, "c") == _kc_rows(wh, f"fresh-{path.parent.name}"), path
