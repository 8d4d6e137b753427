"""Malformed input: every case is a clear error or a reject with file, line and column.

Small files are written into tmp_path; counts are checked so nothing is lost silently
(``n_read == len(attempts) + len(rejects)``).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from research.errors import ConfigError, DataError, SchemaError
from research.ingest import read_file, sniff
from research.pseudonym import Pseudonymiser

HEADER = ["Row", "Transaction Id", "Anon Student Id", "Session Id", "Time", "Time Zone", "Duration (sec)",
          "Level (Unit)", "Level (Section)", "Problem Name", "Problem View", "Step Name", "Attempt At Step",
          "Outcome", "Input", "KC (Default)", "KC Category (Default)", "KC (Default)"]


def row(i, *, tid=None, stu="Stu_secret_A", time="2024-03-01 10:00:00", tz="UTC", outcome="CORRECT", attempt="1",
        step="s1", kc="kc1", kc2="", problem="p1", duration="5"):
    return [str(i), tid or f"t{i}", stu, "sess", time, tz, duration, "u1", "sec1", problem, "1", step, attempt,
            outcome, "42", kc, "", kc2]


def write_tx(path, rows, header=HEADER, sep="\t", newline="\n", tail=None):
    text = newline.join(sep.join(r) for r in [header, *rows]) + (newline if tail is None else tail)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def ps():
    return Pseudonymiser(key=b"k-malformed")


def ingest(path, ps, **kw):
    res = read_file(path, cohort="t", pseudonymiser=ps, **kw)
    assert res.n_read == len(res.tables["attempts"]) + len(res.rejects), "rows lost"
    for text in res.rejects["raw"].dropna():
        assert "Stu_secret" not in text, "raw learner id in a reject"
    assert not res.tables["attempts"]["learner_id"].str.contains("Stu_secret").any()
    return res


def test_clean_file_maps_everything(tmp_path, ps):
    p = write_tx(tmp_path / "tx.txt", [row(1, kc="a~~b", kc2="b"), row(2, outcome="INCORRECT", attempt="2", tz="Europe/Stockholm"),
                                      row(3, outcome="hint", attempt="3", duration=".")])
    res = ingest(p, ps)
    att = res.tables["attempts"]
    assert list(att["outcome"]) == ["correct", "incorrect", "hint"]
    assert list(att["source_line"]) == [2, 3, 4]
    assert att.loc[1, "timestamp"] == pd.Timestamp("2024-03-01 09:00:00")  # CET = UTC+1 in March
    assert pd.isna(att.loc[2, "duration_s"])
    assert (att["module"] == "u1").all() and (att["page"] == "sec1").all()
    kcs = res.tables["attempt_kcs"]
    assert sorted(kcs.loc[kcs.attempt_id == "t1", "kc"]) == ["a", "b"]  # repeated KC columns unioned
    assert set(kcs["kc_model"]) == {"Default"}


def test_missing_required_columns(tmp_path, ps):
    header = [h for h in HEADER if h not in ("Outcome", "Time")]
    p = tmp_path / "tx.txt"
    p.write_text("\t".join(header) + "\n" + "\t".join(["1"] * len(header)) + "\n", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"tx\.txt: missing required column\(s\) 'Time', 'Outcome'.*Required: Anon Student Id"):
        read_file(p, cohort="t", pseudonymiser=ps, format="datashop")


def test_unknown_outcome_rejected_with_known_values(tmp_path, ps):
    p = write_tx(tmp_path / "tx.txt", [row(1), row(2, outcome="MAYBE"), row(3, outcome="ERROR"), row(4, outcome="BUG")])
    res = ingest(p, ps)
    rej = res.rejects
    assert len(rej) == 1
    r = rej.iloc[0]
    assert (r.source_file, r.source_line, r.column, r.kind) == ("tx.txt", 3, "Outcome", "rejected")
    assert "unknown outcome 'MAYBE'" in r.reason and "CORRECT" in r.reason and "INCORRECT" in r.reason
    assert list(res.tables["attempts"]["outcome"]) == ["correct", "incorrect", "incorrect"]
    assert json.loads(r.raw) == {"Outcome": "MAYBE"}  # the offending value only, never the row


def test_blank_and_ungraded_outcomes_are_skipped(tmp_path, ps):
    p = write_tx(tmp_path / "tx.txt", [row(1), row(2, outcome=""), row(3, outcome="UNGRADED")])
    res = ingest(p, ps)
    assert list(res.rejects["kind"]) == ["skipped", "skipped"]
    assert list(res.rejects["source_line"]) == [3, 4]
    assert res.rejects["reason"].str.startswith("not an attempt").all()


def test_bad_and_missing_timestamps(tmp_path, ps):
    p = write_tx(tmp_path / "tx.txt", [row(1), row(2, time="yesterday"), row(3, time=""), row(4, tz="Mars/Olympus")])
    res = ingest(p, ps)
    rej = res.rejects.set_index("source_line")
    assert rej.loc[3, "column"] == "Time" and "cannot parse timestamp 'yesterday'" in rej.loc[3, "reason"]
    assert rej.loc[4, "column"] == "Time" and rej.loc[4, "reason"] == "missing timestamp"
    assert rej.loc[5, "column"] == "Time Zone" and "Mars/Olympus" in rej.loc[5, "reason"]
    assert len(res.tables["attempts"]) == 1


def test_other_bad_values(tmp_path, ps):
    p = write_tx(tmp_path / "tx.txt", [row(1, attempt="0"), row(2, duration="-3"), row(3, stu=""), row(4, problem="")])
    res = ingest(p, ps)
    assert list(res.rejects["column"]) == ["Attempt At Step", "Duration (sec)", "Anon Student Id", "Problem Name"]
    assert res.tables["attempts"].empty


def test_blank_attempt_counted_in_time_order(tmp_path, ps):
    p = write_tx(tmp_path / "tx.txt", [row(1, attempt="", time="2024-03-01 10:00:05"), row(2, attempt="", time="2024-03-01 10:00:01")])
    att = ingest(p, ps).tables["attempts"]
    assert list(att["attempt"]) == [2, 1]


def test_wrong_delimiter(tmp_path, ps):
    p = write_tx(tmp_path / "tx.txt", [row(1)], sep=",")
    assert sniff(p) == "datashop"
    with pytest.raises(DataError, match="tx.txt: expected tab-delimited DataShop transaction export, found commas"):
        read_file(p, cohort="t", pseudonymiser=ps)


def test_empty_file(tmp_path, ps):
    p = tmp_path / "empty.txt"
    p.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt: the file is empty"):
        read_file(p, cohort="t", pseudonymiser=ps, format="datashop")
    with pytest.raises(DataError, match="empty.txt: the file is empty"):
        sniff(p)


def test_header_only_file_gives_empty_tables(tmp_path, ps):
    p = write_tx(tmp_path / "tx.txt", [])
    res = ingest(p, ps)
    assert res.n_read == 0 and res.tables["attempts"].empty and res.tables["attempt_kcs"].empty
    assert list(res.tables["attempts"].columns)[:3] == ["cohort", "attempt_id", "learner_id"]


def test_non_utf8_bytes(tmp_path, ps):
    p = write_tx(tmp_path / "tx.txt", [row(1), row(2)])
    data = p.read_bytes().replace(b"\t42\t", b"\t4\xe52\t", 2)  # Latin-1 'å' on both data lines
    p.write_bytes(data)
    offset = data.index(b"\xe5")
    with pytest.raises(DataError, match=rf"tx.txt: line 2 is not valid UTF-8 \(byte 0xE5 at byte offset {offset}\).*Re-export the file as UTF-8"):
        read_file(p, cohort="t", pseudonymiser=ps)
    res = ingest(p, ps, options={"encoding": "latin-1"})
    assert list(res.tables["attempts"]["response"]) == ["4å2", "4å2"]


def test_utf16_file_says_so(tmp_path, ps):
    p = tmp_path / "tx.txt"
    p.write_bytes(("\t".join(HEADER) + "\n").encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        read_file(p, cohort="t", pseudonymiser=ps, format="datashop")


def test_exact_duplicate_rows_rejected(tmp_path, ps):
    p = write_tx(tmp_path / "tx.txt", [row(1), row(2), ["3", *row(1)[1:]], ["4", *row(2, outcome="INCORRECT")[1:]]])
    res = ingest(p, ps)
    assert len(res.tables["attempts"]) == 2
    rej = res.rejects.set_index("source_line")
    assert rej.loc[4, "reason"] == "duplicate of line 2"
    assert rej.loc[4, "column"] == "Transaction Id"
    assert rej.loc[5, "reason"] == "id 't2' already used on line 3 with different content"


def test_without_transaction_ids_rows_are_hashed(tmp_path, ps):
    header = [h for h in HEADER if h != "Transaction Id"]
    rows = [[c for h, c in zip(HEADER, r) if h != "Transaction Id"] for r in [row(1), row(2, outcome="INCORRECT"), row(1)]]
    rows[2][0] = "3"  # same content as line 2 apart from the Row counter
    p = write_tx(tmp_path / "tx.txt", rows, header=header)
    res = ingest(p, ps)
    att = res.tables["attempts"]
    assert len(att) == 2 and att["attempt_id"].str.fullmatch(r"tx_[0-9a-f]{24}").all()
    assert res.rejects.iloc[0]["reason"] == "duplicate of line 2"
    again = ingest(p, ps)
    assert again.tables["attempts"]["attempt_id"].equals(att["attempt_id"])  # stable ids


def test_truncated_last_line(tmp_path, ps):
    rows = [row(1), row(2), row(3)[:8]]
    p = write_tx(tmp_path / "tx.txt", rows, tail="")
    res = ingest(p, ps)
    assert len(res.tables["attempts"]) == 2
    r = res.rejects.iloc[0]
    assert (r.source_line, r.kind, r.column) == (4, "rejected", "Level (Section)")  # the first field missing
    assert "8 fields where the header has 18" in r.reason and "truncated" in r.reason
    assert pd.isna(r.raw)  # a malformed line's fields do not line up: none is kept


def test_line_with_extra_fields_and_blank_lines(tmp_path, ps):
    rows = [row(1), [], row(2) + ["extra"], row(3)]
    p = write_tx(tmp_path / "tx.txt", rows)
    res = ingest(p, ps)
    assert list(res.tables["attempts"]["source_line"]) == [2, 5]
    assert list(res.rejects["source_line"]) == [4]
    assert "19 fields" in res.rejects.iloc[0]["reason"]
    assert res.rejects.iloc[0]["column"] == "(after KC (Default))"


def test_crlf_and_bom(tmp_path, ps):
    p = tmp_path / "tx.txt"
    p.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join("\t".join(r) for r in [HEADER, row(1), row(2)]) + "\r\n").encode())
    res = ingest(p, ps)
    assert list(res.tables["attempts"]["source_line"]) == [2, 3]
    assert list(res.tables["attempt_kcs"]["kc"]) == ["kc1", "kc1"]


def test_unknown_format_and_options(tmp_path, ps):
    p = tmp_path / "notes.txt"
    p.write_text("hello\tworld\n1\t2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"notes.txt: unknown format; known formats: datashop, datashop-step, xapi, csv, parquet"):
        sniff(p)
    with pytest.raises(ConfigError, match=r"unknown format 'excel'; known formats: datashop"):
        read_file(p, cohort="t", pseudonymiser=ps, format="excel")
    good = write_tx(tmp_path / "tx.txt", [row(1)])
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'mapping' for format 'datashop'; valid options: "):
        read_file(good, cohort="t", pseudonymiser=ps, format="datashop", options={"mapping": "x.yaml"})
    with pytest.raises(ConfigError, match=r"mapping file not found: x.yaml"):  # a mapping implies csv
        read_file(good, cohort="t", pseudonymiser=ps, options={"mapping": "x.yaml"})
    with pytest.raises(ConfigError, match=r"unknown module_level 'deep'; valid values: parent, path, first"):
        read_file(good, cohort="t", pseudonymiser=ps, options={"module_level": "deep"})


def test_missing_file(tmp_path, ps):
    with pytest.raises(DataError, match="not found"):
        read_file(tmp_path / "nope.txt", cohort="t", pseudonymiser=ps, format="datashop")


STEP_HEADER = ["Row", "Anon Student Id", "Problem Hierarchy", "Problem Name", "Problem View", "Step Name", "Step Start Time",
               "First Transaction Time", "Correct Transaction Time", "Step End Time", "Step Duration (sec)", "First Attempt",
               "Incorrects", "Hints", "Corrects", "KC (M)", "Opportunity (M)"]


def step_row(i, *, first="incorrect", inc="2", hints="1", cor="1", t1="2024-03-01 10:00:00", t2="2024-03-01 10:00:30",
             step="s1", kc="a~~b", opp="3~~1", stu="Stu_secret_B"):
    return [str(i), stu, "Unit U1, Section S1", "p1", "1", step, t1, t1, t2, t2, "30", first, inc, hints, cor, kc, opp]


def test_student_step_expansion_and_rejects(tmp_path, ps):
    rows = [step_row(1), step_row(2, first="maybe", step="s2"), step_row(3, first="hint", hints="0", step="s3"),
            step_row(4, inc="x", step="s4"), step_row(5, t1="", step="s5"), step_row(6, t1="soon", step="s6"), step_row(1),
            step_row(8, step="s8", kc="a~~b", opp="1")]
    p = write_tx(tmp_path / "steps.txt", rows, header=STEP_HEADER)
    assert sniff(p) == "datashop-step"
    res = read_file(p, cohort="t", pseudonymiser=ps)
    assert res.n_read == 8
    rej = res.rejects.set_index("source_line")
    assert rej.loc[3, "column"] == "First Attempt" and "unknown First Attempt 'maybe'" in rej.loc[3, "reason"]
    assert "First Attempt 'hint' but its count" in rej.loc[4, "reason"]
    assert rej.loc[5, "column"] == "Incorrects"
    assert rej.loc[6, "column"] == "First Transaction Time"
    assert "cannot parse timestamp 'soon'" in rej.loc[7, "reason"]
    assert rej.loc[8, "reason"] == "duplicate of line 2"
    att = res.tables["attempts"]
    assert res.n_read == att["source_line"].nunique() + len(res.rejects)
    first = att[att["source_line"] == 2].sort_values("attempt")
    assert list(first["outcome"]) == ["incorrect", "incorrect", "hint", "correct"]  # 2 incorrects, 1 hint, 1 correct
    assert list(first["timestamp"]) == list(pd.to_datetime(["2024-03-01 10:00:00", "2024-03-01 10:00:10", "2024-03-01 10:00:20", "2024-03-01 10:00:30"]))
    assert (first["module"] == "U1").all() and (first["page"] == "S1").all()
    kcs = res.tables["attempt_kcs"]
    one = kcs[kcs["attempt_id"] == first["attempt_id"].iloc[0]].sort_values("kc")
    assert list(one["kc"]) == ["a", "b"] and list(one["opportunity"]) == [3, 1]
    # a KC cell and an Opportunity cell that split differently: KCs kept, opportunity left empty
    odd = kcs[kcs["attempt_id"].isin(att.loc[att["source_line"] == 9, "attempt_id"])]
    assert set(odd["kc"]) == {"a", "b"} and odd["opportunity"].isna().all()
    assert not res.rejects["raw"].str.contains("Stu_secret").any()


def test_student_step_missing_columns(tmp_path, ps):
    header = [h for h in STEP_HEADER if h not in ("Incorrects", "Hints")]
    p = tmp_path / "steps.txt"
    p.write_text("\t".join(header) + "\n", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"steps.txt: missing required column\(s\) 'Incorrects', 'Hints' for a DataShop student-step export"):
        read_file(p, cohort="t", pseudonymiser=ps)
