"""Hostile and broken input, generated here: dozens of variants of every format h5 reads.

For every variant, through the real command (``research ingest``, in process):

- no traceback: the command returns 0, 1 (a message) or 2 (rows rejected);
- read = loaded + rejected + skipped (+ already present) for every table of every file;
- no row unaccounted for: every non-blank data line of the file is counted as read
  (for student-step exports: every line is a loaded step or a quarantined line);
- no raw learner id anywhere: warehouse tables and file bytes, stdout, stderr
  (:mod:`tests.rawid`), and no unmapped column value (a full name) either.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from research.cli import main
from tests.rawid import assert_no_raw_ids, raw_id_hits

RAW = [f"Stu_secret_{i:04d}" for i in range(1, 7)]
NAMES = ["Ada Secretname", "Bo Hiddensson"]  # an unmapped "Full name" column: must never be stored

# --------------------------------------------------------------------------- DataShop transactions

TX_HEADER = ["Row", "Transaction Id", "Anon Student Id", "Session Id", "Time", "Time Zone", "Duration (sec)",
             "Level (Unit)", "Level (Section)", "Problem Name", "Problem View", "Step Name", "Attempt At Step",
             "Outcome", "Input", "KC (Default)"]


def tx_row(i, **kw):
    r = {"Row": str(i), "Transaction Id": f"t{i}", "Anon Student Id": RAW[i % len(RAW)], "Session Id": f"sess-{RAW[i % len(RAW)]}",
         "Time": f"2024-03-01 10:{i % 60:02d}:00", "Time Zone": "UTC", "Duration (sec)": "5", "Level (Unit)": "u1",
         "Level (Section)": "s1", "Problem Name": f"p{i % 3}", "Problem View": "1", "Step Name": "step", "Attempt At Step": "1",
         "Outcome": "CORRECT" if i % 2 else "INCORRECT", "Input": "42", "KC (Default)": "kc1"}
    r.update(kw)
    return r


def tx_text(rows, header=TX_HEADER, sep="\t", nl="\n"):
    lines = [sep.join(header)] + [sep.join(r.get(h, "") for h in header) for r in rows]
    return (nl.join(lines) + nl).encode("utf-8")


def tx_variants():
    base = [tx_row(i) for i in range(1, 9)]
    v = {"clean": tx_text(base)}
    t = tx_text(base).decode()
    v["truncated_last_line"] = (t.rstrip("\n").rsplit("\t", 9)[0]).encode()
    v["extra_field"] = tx_text(base[:3]) + ("\t".join(tx_row(9).values()) + "\textra\n").encode() + tx_text(base[3:])[len(tx_text([])):]
    v["blank_and_tab_lines"] = tx_text(base[:2]) + b"\n\t\t\t\n   \n" + tx_text(base[2:])[len(tx_text([])):]
    v["crlf"] = tx_text(base, nl="\r\n")
    v["lone_cr_in_field"] = tx_text(base[:2] + [tx_row(3, Input="4\r2")] + base[3:])
    v["cr_only_line_ends"] = tx_text(base, nl="\r")
    v["quote_in_value"] = tx_text(base[:2] + [tx_row(3, Input='say "hi')] + base[3:])
    v["attempt_2_63"] = tx_text(base[:2] + [tx_row(3, **{"Attempt At Step": str(2**63)})] + base[3:])
    v["attempt_huge"] = tx_text(base[:2] + [tx_row(3, **{"Attempt At Step": "9" * 40})] + base[3:])
    v["problem_view_2_64"] = tx_text(base[:2] + [tx_row(3, **{"Problem View": str(2**64)})] + base[3:])
    v["duration_1e400"] = tx_text(base[:2] + [tx_row(3, **{"Duration (sec)": "1e400"})] + base[3:])
    v["duration_nan_inf"] = tx_text(base[:2] + [tx_row(3, **{"Duration (sec)": "NaN"}), tx_row(4, **{"Duration (sec)": "-inf"})] + base[4:])
    v["negative_view"] = tx_text(base[:2] + [tx_row(3, **{"Problem View": "-1"})] + base[3:])
    v["bad_times"] = tx_text(base[:2] + [tx_row(3, Time="99999-01-01 00:00:00"), tx_row(4, Time="2024-13-45 25:61:00")] + base[4:])
    v["unknown_zone"] = tx_text(base[:2] + [tx_row(3, **{"Time Zone": "Mars/Olympus"})] + base[3:])
    v["overlong_problem"] = tx_text(base[:2] + [tx_row(3, **{"Problem Name": "x" * 70_000})] + base[3:])
    v["overlong_input"] = tx_text(base[:2] + [tx_row(3, Input="y" * 200_000)] + base[3:])
    v["invalid_utf8"] = tx_text(base[:2]) + b"3\tt3\t" + RAW[0].encode() + b"\ts\t2024-03-01 10:00:00\tUTC\t5\tu1\ts1\tp\xff\t1\ts\t1\tCORRECT\t1\tk\n"
    v["lone_surrogate_cesu"] = tx_text(base[:2]) + b"3\tt3\t" + RAW[0].encode() + b"\ts\t2024-03-01 10:00:00\tUTC\t5\tu1\ts1\tp\xed\xa0\x80\t1\ts\t1\tCORRECT\t1\tk\n"
    v["nul_byte"] = tx_text(base[:2] + [tx_row(3, Input="a\x00b")] + base[3:])
    v["bom"] = b"\xef\xbb\xbf" + tx_text(base)
    v["headerless"] = tx_text(base)[len(tx_text([])):]
    v["empty"] = b""
    v["header_only"] = tx_text([])
    hdr = TX_HEADER + ["Anon Student Id", "Full name"]
    v["repeated_id_and_full_name"] = tx_text([{**r, "Full name": NAMES[i % 2]} for i, r in enumerate(base)], header=hdr).replace(
        b"\tkc1\t", b"\tkc1\t" + RAW[5].encode() + b"\t")
    v["duplicate_tx_ids"] = tx_text(base + [tx_row(1, Input="different")])
    v["missing_learner"] = tx_text(base[:2] + [tx_row(3, **{"Anon Student Id": ""})] + base[3:])
    v["formula_names"] = tx_text(base[:2] + [tx_row(3, **{"Problem Name": "=HYPERLINK(\"http://x\")", "KC (Default)": "+cmd|' /C calc'!A0"})] + base[3:])
    v["utf16"] = tx_text(base).decode().encode("utf-16")
    v["comma_delimited"] = tx_text(base, sep=",")
    v["thousand_columns"] = tx_text(base, header=TX_HEADER + [f"X{i}" for i in range(1000)])
    v["odd_unicode"] = tx_text(base[:2] + [tx_row(3, **{"Problem Name": "p\u202eevil\u200b", "Step Name": "emoji \U0001F600"})] + base[3:])
    v["raw_id_in_other_columns"] = tx_text(base[:2] + [tx_row(3, Outcome=RAW[2], **{"Time Zone": RAW[3], "Attempt At Step": RAW[4]})] + base[3:])
    v["outcome_cases"] = tx_text(base[:2] + [tx_row(3, Outcome="correct"), tx_row(4, Outcome="UNGRADED"), tx_row(5, Outcome=""), tx_row(6, Outcome="MAYBE")] + base[6:])
    no_ids = [h for h in TX_HEADER if h not in ("Row", "Transaction Id")]
    v["no_row_no_tx_id"] = tx_text(base, header=no_ids)
    return v


# --------------------------------------------------------------------------- DataShop student-step

STEP_HEADER = ["Row", "Anon Student Id", "Problem Hierarchy", "Problem Name", "Problem View", "Step Name",
               "First Transaction Time", "Correct Transaction Time", "Step Duration (sec)", "First Attempt",
               "Incorrects", "Hints", "Corrects", "KC (Default)", "Opportunity (Default)"]


def step_row(i, **kw):
    r = {"Row": str(i), "Anon Student Id": RAW[i % len(RAW)], "Problem Hierarchy": "Unit u1, Section s1", "Problem Name": f"p{i % 3}",
         "Problem View": "1", "Step Name": f"s{i}", "First Transaction Time": "2007-05-18 20:21:07",
         "Correct Transaction Time": "2007-05-18 20:22:07", "Step Duration (sec)": "60", "First Attempt": "incorrect",
         "Incorrects": "1", "Hints": "0", "Corrects": "1", "KC (Default)": "kc1", "Opportunity (Default)": "1"}
    r.update(kw)
    return r


def step_variants():
    base = [step_row(i) for i in range(1, 7)]
    mk = lambda rows, **k: tx_text(rows, header=k.get("header", STEP_HEADER), nl=k.get("nl", "\n"))  # noqa: E731
    v = {"clean": mk(base)}
    v["incorrects_300_million"] = mk(base[:2] + [step_row(3, Incorrects="300000000")] + base[3:])
    v["incorrects_2_63"] = mk(base[:2] + [step_row(3, Incorrects=str(2**63))] + base[3:])
    v["corrects_1e30"] = mk(base[:2] + [step_row(3, Corrects="1e30")] + base[3:])
    v["bad_counts"] = mk(base[:2] + [step_row(3, Hints="-1"), step_row(4, Hints="1.5"), step_row(5, Hints="many")] + base[5:])
    v["unknown_first_attempt"] = mk(base[:2] + [step_row(3, **{"First Attempt": "maybe"})] + base[3:])
    v["raw_id_as_first_attempt"] = mk(base[:2] + [step_row(3, **{"First Attempt": RAW[2]}), step_row(4, Hints=RAW[3])] + base[4:])
    v["contradiction"] = mk(base[:2] + [step_row(3, **{"First Attempt": "hint", "Hints": "0"})] + base[3:])
    v["truncated"] = mk(base)[:-40]
    v["headerless"] = mk(base)[len(mk([])):]
    v["bad_times"] = mk(base[:2] + [step_row(3, **{"First Transaction Time": "yesterday"})] + base[3:])
    v["overlong_step"] = mk(base[:2] + [step_row(3, **{"Step Name": "z" * 100_000})] + base[3:])
    v["crlf_blank"] = mk(base[:3], nl="\r\n") + b"\r\n\r\n" + mk(base[3:], nl="\r\n")[len(mk([], nl="\r\n")):]
    v["opportunity_mismatch"] = mk(base[:2] + [step_row(3, **{"KC (Default)": "a~~b", "Opportunity (Default)": "1"})] + base[3:])
    v["duplicate_steps"] = mk(base + [step_row(1)])
    return v


# --------------------------------------------------------------------------- CSV and Parquet with mappings

ASSESS_MAPPING = """table: assessments
columns: {learner_id: student, instrument: test, phase: phase, item_id: item, score: score, max_score: max}
"""
ATTEMPTS_MAPPING = """table: attempts
columns: {learner_id: student, item_id: item, outcome: result, timestamp: time, attempt: n}
values: {outcome: {right: correct, wrong: incorrect}}
kcs: {Default: skill}
"""
CSV_HEADER = "student,test,phase,item,score,max,Full name"


def csv_line(i, **kw):
    r = {"student": RAW[i % len(RAW)], "test": "T", "phase": "pre" if i % 2 else "post", "item": f"q{i}", "score": "1", "max": "1",
         "Full name": NAMES[i % 2]}
    r.update(kw)
    return ",".join(r.values())


def csv_variants():
    lines = [csv_line(i) for i in range(1, 41)]
    body = lambda ls, nl="\n": (nl.join([CSV_HEADER, *ls]) + nl).encode()  # noqa: E731
    v = {"clean": body(lines)}
    v["unbalanced_quote"] = body(lines[:5] + [csv_line(6, item='"q6')] + lines[6:])
    v["quoted_newline"] = body(lines[:5] + [csv_line(6, item='"q\n6"')] + lines[6:])
    v["escaped_quotes_ok"] = body(lines[:5] + [csv_line(6, item='"q ""six"""')] + lines[6:])
    v["ragged"] = body(lines[:5] + [csv_line(6) + ",extra", ",".join(csv_line(7).split(",")[:3])] + lines[7:])
    v["semicolons"] = body([line.replace(",", ";") for line in lines]).replace(CSV_HEADER.encode(), CSV_HEADER.replace(",", ";").encode())
    v["headerless"] = body(lines)[len(CSV_HEADER) + 1:]
    v["score_huge"] = body(lines[:5] + [csv_line(6, score=str(2**63)), csv_line(7, score="1e400"), csv_line(8, score="NaN"), csv_line(9, score="inf")] + lines[9:])
    v["bad_phase"] = body(lines[:5] + [csv_line(6, phase="during")] + lines[6:])
    v["duplicate_key"] = body(lines + [lines[3]])
    v["missing_learner"] = body(lines[:5] + [csv_line(6, student="")] + lines[6:])
    v["lone_cr"] = body(lines[:5] + [csv_line(6, item="q\r6")] + lines[6:])
    v["bom_crlf"] = b"\xef\xbb\xbf" + body(lines, nl="\r\n")
    v["only_blank_lines"] = (CSV_HEADER + "\n\n\n,,,,,,\n").encode()
    v["overlong_item"] = body(lines[:5] + [csv_line(6, item="i" * 70_000)] + lines[6:])
    v["invalid_utf8"] = body(lines[:5]) + b"Stu_secret_0001,T,pre,q\xff,1,1,x\n"
    v["raw_id_in_score_and_phase"] = body(lines[:5] + [csv_line(6, score=RAW[1]), csv_line(7, phase=RAW[2])] + lines[7:])
    v["max_as_text"] = body(lines[:5] + [csv_line(6, max="one")] + lines[6:])
    v["formula_item"] = body(lines[:5] + [csv_line(6, item="=1+1"), csv_line(7, item="@SUM(A1)")] + lines[7:])
    return v


def csv_attempt_variants():
    head = "student,item,result,time,n,skill"
    rows = [f"{RAW[i % 6]},i{i % 3},{'right' if i % 2 else 'wrong'},2024-03-01 10:{i:02d}:00,{i},k{i % 2}" for i in range(1, 21)]
    body = lambda ls: ("\n".join([head, *ls]) + "\n").encode()  # noqa: E731
    v = {"clean": body(rows)}
    v["attempt_2_63"] = body(rows[:3] + [f"{RAW[0]},i1,right,2024-03-01 11:00:00,{2**63},k1"] + rows[3:])
    v["attempt_fraction_negative"] = body(rows[:3] + [f"{RAW[0]},i1,right,2024-03-01 11:00:00,1.5,k1", f"{RAW[1]},i1,right,2024-03-01 11:00:00,-2,k1"] + rows[3:])
    v["unbalanced_quote_merges"] = body(rows[:3] + [f'{RAW[0]},"i1,right,2024-03-01 11:00:00,4,k1'] + rows[3:])
    v["many_kcs"] = body(rows[:3] + [f"{RAW[0]},i1,right,2024-03-01 11:00:00,4," + "~~".join(f"k{j}" for j in range(500))] + rows[3:])
    return v


def parquet_variants(tmp: Path):
    n = 12
    base = {"student": [RAW[i % 6] for i in range(n)], "test": ["T"] * n, "phase": ["pre", "post"] * (n // 2),
            "item": [f"q{i}" for i in range(n)], "score": [1.0] * n, "max": [1.0] * n, "Full name": [NAMES[i % 2] for i in range(n)]}
    v = {}

    def put(name, table):
        buf = io.BytesIO()
        pq.write_table(table, buf)
        v[name] = buf.getvalue()

    put("clean", pa.table(base))
    put("uint64_huge", pa.table({**base, "score": pa.array([2**64 - 1] + [1] * (n - 1), pa.uint64())}))
    put("int64_max", pa.table({**base, "max": pa.array([2**63 - 1] * n, pa.int64())}))
    put("inf_nan", pa.table({**base, "score": [float("inf"), float("nan")] + [1.0] * (n - 2)}))
    put("null_learner", pa.table({**base, "student": [None] + base["student"][1:]}))
    put("list_item", pa.table({**base, "item": pa.array([[f"q{i}", "x"] for i in range(n)])}))
    put("overlong", pa.table({**base, "item": ["w" * 70_000] + base["item"][1:]}))
    put("timestamp_score", pa.table({**base, "score": pa.array(pd.date_range("2024-01-01", periods=n))}))
    v["truncated"] = v["clean"][: len(v["clean"]) // 2]
    v["not_parquet"] = b"student,score\n" + RAW[0].encode() + b",1\n"
    return v


# --------------------------------------------------------------------------- the run


def _nonblank_data_lines(data: bytes, delimiter: bytes) -> int:
    """Independent count: physical lines after the first holding more than whitespace and delimiters."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")[1:]
    return sum(1 for line in lines if line.replace(delimiter, b"").strip(b" \t\r"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Every variant through `research ingest` into one warehouse (one cohort each); results per variant."""
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "assess.mapping.yaml").write_text(ASSESS_MAPPING, encoding="utf-8")
    (tmp / "attempts.mapping.yaml").write_text(ATTEMPTS_MAPPING, encoding="utf-8")
    wh = tmp / "w.duckdb"
    cases = []
    for fmt, suffix, mapping, variants, delim in (
        ("datashop", ".txt", None, tx_variants(), b"\t"),
        ("datashop-step", ".txt", None, step_variants(), b"\t"),
        ("csv", ".csv", "assess.mapping.yaml", csv_variants(), b","),
        ("csv-attempts", ".csv", "attempts.mapping.yaml", csv_attempt_variants(), b","),
        ("parquet", ".parquet", "assess.mapping.yaml", parquet_variants(tmp), None),
    ):
        for name, data in variants.items():
            path = tmp / f"{fmt}-{name}{suffix}"
            path.write_bytes(data)
            args = ["ingest", str(path), "--cohort", f"{fmt}-{name}", "--warehouse", str(wh)]
            if mapping:
                args += ["--mapping", str(tmp / mapping)]
            elif fmt != "datashop" or name not in ("headerless",):
                args += ["--format", fmt]
            out, err = io.StringIO(), io.StringIO()
            crash = None
            try:
                with redirect_stdout(out), redirect_stderr(err):
                    rc = main(args)
            except BaseException as exc:  # a traceback: what this test exists to rule out
                rc, crash = None, f"{type(exc).__name__}: {exc}"[:300]
            cases.append({"format": fmt, "name": name, "path": path, "rc": rc, "crash": crash, "out": out.getvalue(),
                          "err": err.getvalue(), "data": data, "delim": delim, "cohort": f"{fmt}-{name}"})
    return {"cases": cases, "warehouse": wh, "tmp": tmp}


def test_corpus_is_large(corpus):
    by_format = pd.Series([c["format"] for c in corpus["cases"]]).value_counts()
    assert len(corpus["cases"]) >= 80 and (by_format >= 5).all(), by_format.to_dict()


def test_no_traceback_for_any_input(corpus):
    crashes = [f"{c['format']}/{c['name']}: {c['crash']}" for c in corpus["cases"] if c["crash"]]
    assert not crashes, "\n".join(crashes)
    assert all(c["rc"] in (0, 1, 2) for c in corpus["cases"])
    for c in corpus["cases"]:
        if c["rc"] == 1:  # a refusal names the file (or the warehouse) and says what to do
            assert c["err"].startswith("error: ") and "Traceback" not in c["err"], (c["name"], c["err"])


def test_read_equals_loaded_plus_rejected_plus_skipped(corpus):
    con = duckdb.connect(str(corpus["warehouse"]), read_only=True)
    loads = con.execute("SELECT * FROM loads").df()
    con.close()
    bad = loads[loads["n_read"] != loads["n_loaded"] + loads["n_rejected"] + loads["n_skipped"] + loads["n_already_present"]]
    assert bad.empty, bad[["cohort", "table_name", "n_read", "n_loaded", "n_rejected", "n_skipped", "n_already_present"]].to_string()
    loaded = {c["cohort"] for c in corpus["cases"] if c["rc"] in (0, 2)}
    assert loaded <= set(loads["cohort"])  # every accepted file is in the load record


def test_no_line_unaccounted_for(corpus):
    con = duckdb.connect(str(corpus["warehouse"]), read_only=True)
    unaccounted = []
    for c in corpus["cases"]:
        if c["rc"] not in (0, 2):
            continue  # refused as a whole: nothing was loaded
        table = {"datashop": "attempts", "datashop-step": "attempts", "csv-attempts": "attempts"}.get(c["format"], "assessments")
        if c["delim"] is None:
            expected = pq.ParquetFile(c["path"]).metadata.num_rows
        else:
            expected = _nonblank_data_lines(c["data"], c["delim"])
        if c["format"] == "datashop-step":  # one line -> several attempts: count distinct lines
            got = con.execute(
                """SELECT count(DISTINCT l) FROM (SELECT source_line AS l FROM attempts WHERE cohort = ?
                   UNION ALL SELECT source_line FROM quarantine WHERE cohort = ? AND table_name = 'attempts')""",
                [c["cohort"], c["cohort"]]).fetchall()[0][0]
        else:
            got = con.execute("SELECT sum(n_read) FROM loads WHERE cohort = ? AND table_name = ?", [c["cohort"], table]).fetchall()[0][0] or 0
        if got != expected:
            unaccounted.append(f"{c['format']}/{c['name']}: {expected} data lines, {got} read")
    con.close()
    assert not unaccounted, "\n".join(unaccounted)


def test_no_raw_id_or_unmapped_value_anywhere(corpus):
    texts = [t for c in corpus["cases"] for t in (c["out"], c["err"])]
    assert_no_raw_ids(RAW + NAMES, warehouse=corpus["warehouse"], texts=texts)


def test_strictness_examples(corpus):
    """Spot checks that the corpus exercises what it claims: merged lines, caps, overflow."""
    con = duckdb.connect(str(corpus["warehouse"]), read_only=True)
    q = lambda cohort: con.execute("SELECT source_line, \"column\", reason FROM quarantine WHERE cohort = ? ORDER BY source_line", [cohort]).df()  # noqa: E731
    merged = q("csv-unbalanced_quote")
    assert list(merged["source_line"]) == [7] and "unbalanced quote" in merged["reason"].iloc[0]
    n_items = con.execute("SELECT count(*) FROM assessments WHERE cohort = 'csv-unbalanced_quote'").fetchall()[0][0]
    assert n_items == 39  # the other 39 lines load; none is swallowed into one value
    huge = q("datashop-step-incorrects_300_million")
    assert len(huge) == 1 and "more than 10,000 attempts" in huge["reason"].iloc[0]
    big = q("datashop-attempt_2_63")
    assert list(big["column"]) == ["Attempt At Step"]
    assert con.execute("SELECT count(*) FROM attempts WHERE cohort = 'datashop-step-incorrects_300_million'").fetchall()[0][0] < 100
    con.close()


def test_scan_helper_finds_what_it_should(tmp_path):
    """The raw-id scan itself can fail: it finds an id in a table, a file and a text."""
    wh = tmp_path / "w.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE TABLE t (x VARCHAR)")
    con.execute("INSERT INTO t VALUES ('row of Stu_secret_0001 here')")
    con.close()
    (tmp_path / "r.html").write_text("<p>Stu_secret_0002</p>", encoding="utf-8")
    hits = raw_id_hits(RAW, warehouse=wh, texts=["... Stu_secret_0003 ..."], paths=[tmp_path / "r.html"])
    assert any("warehouse t.x: Stu_secret_0001" in h for h in hits)
    assert any("Stu_secret_0002" in h and "r.html" in h for h in hits)
    assert any(h == "text #0: Stu_secret_0003" for h in hits)
    with pytest.raises(AssertionError, match="raw learner ids found"):
        assert_no_raw_ids(RAW, texts=["Stu_secret_0004"])


@pytest.mark.parametrize("text", [
    'table: assessments\ncolumns: {learner_id: a, instrument: b, phase: b, item_id: b, score: b, max_score: b}\nvalues: {phase: {"2": "\\uDC80"}}\n',
    "table: " + "[" * 5000 + "]" * 5000 + "\n",
    "table: assessments\ncolumns: {learner_id: a\n",
    "- just\n- a list\n",
    "table: assessments\ncolumns: {learner_id: a, instrument: b, phase: b, item_id: b, score: b, max_score: b}\nconstants: {timestamp: not a time}\n",
    "table: learners\ncolumns: {learner_id: a}\nattributes: {gender: b}\n",
    "table: learners\ncolumns: {learner_id: a}\nattributes: {'../x': b}\n",
])
def test_hostile_mappings_are_config_errors(tmp_path, text):
    data = tmp_path / "x.csv"
    data.write_text("a,b\nStu_secret_0001,2\n", encoding="utf-8")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text, encoding="utf-8", errors="surrogatepass")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["ingest", str(data), "--cohort", "c", "--mapping", str(mapping), "--warehouse", str(tmp_path / "w.duckdb")])
    assert rc == 1 and err.getvalue().startswith("error: m.yaml: "), err.getvalue()
    assert "Stu_secret" not in out.getvalue() + err.getvalue()


def test_step_file_expanding_past_the_file_budget_is_refused(tmp_path, monkeypatch):
    from research.ingest import datashop_step

    monkeypatch.setattr(datashop_step, "MAX_ATTEMPTS_PER_FILE", 50)
    path = tmp_path / "step.txt"
    path.write_bytes(tx_text([step_row(i, Incorrects="9") for i in range(1, 7)], header=STEP_HEADER))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["ingest", str(path), "--cohort", "c", "--format", "datashop-step", "--warehouse", str(tmp_path / "w.duckdb")])
    assert rc == 1 and "add up to 60 attempts, more than the 50" in err.getvalue()
