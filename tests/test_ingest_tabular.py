"""Tabular adapter: CSV/Parquet + YAML mapping onto any canonical table."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from research.errors import ConfigError, DataError, SchemaError
from research.ingest import read_file, sniff
from research.ingest.tabular import load_mapping
from research.pseudonym import Pseudonymiser


@pytest.fixture
def ps():
    return Pseudonymiser(key=b"k-tabular")


def write_yaml(path, spec):
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


SWEDISH = """Elev;Prov;Fas;Fråga;Poäng;Maxpoäng;Datum
anna.secret;Digitalt;före;F1;1,5;2;2024-03-01 09:00
anna.secret;Digitalt;efter;F1;2;2;2024-04-01 09:00
bo.secret;Digitalt;före;F1;0,5;2;2024-03-01 09:05
bo.secret;Digitalt;under;F1;1;2;2024-03-15 09:05
bo.secret;Digitalt;efter;F1;abc;2;2024-04-01 09:05
bo.secret;Digitalt;efter;F1;-1;2;2024-04-01 09:05
;Digitalt;efter;F2;1;2;2024-04-01 09:05
bo.secret;Digitalt;före;F1;0,5;2;2024-03-01 09:05
"""

SWEDISH_MAPPING = {
    "table": "assessments",
    "columns": {"learner_id": "Elev", "instrument": "Prov", "phase": "Fas", "item_id": "Fråga", "score": "Poäng",
                "max_score": "Maxpoäng", "timestamp": "Datum"},
    "values": {"phase": {"före": "pre", "efter": "post"}},
    "constants": {"module": None},
    "options": {"delimiter": ";", "decimal": ",", "date_format": "%Y-%m-%d %H:%M", "time_zone": "Europe/Stockholm"},
}


def swedish(tmp_path):
    p = tmp_path / "prov.csv"
    p.write_text(SWEDISH, encoding="utf-8")
    write_yaml(tmp_path / "prov.mapping.yaml", SWEDISH_MAPPING)
    return p


def test_swedish_export_with_sibling_mapping(tmp_path, ps):
    p = swedish(tmp_path)
    assert sniff(p) == "csv"
    res = read_file(p, cohort="vt24", pseudonymiser=ps)
    a = res.tables["assessments"]
    assert res.n_read == 8 == len(a) + len(res.rejects)
    assert list(a["score"]) == [1.5, 2.0, 0.5]
    assert list(a["phase"]) == ["pre", "post", "pre"]
    assert a["learner_id"].str.fullmatch(r"p_[0-9a-f]{16}").all() and (a["cohort"] == "vt24").all()
    assert a.loc[0, "timestamp"] == pd.Timestamp("2024-03-01 08:00")  # CET -> UTC
    assert a["module"].isna().all()
    rej = res.rejects.set_index("source_line")
    assert rej.loc[5, "column"] == "Fas" and "'under' in 'Fas' is not one of pre, mid, post" in rej.loc[5, "reason"]
    assert rej.loc[6, "column"] == "Poäng" and "'abc' in 'Poäng' is not a number (decimal mark ',')" in rej.loc[6, "reason"]
    assert "below the minimum 0" in rej.loc[7, "reason"]
    assert rej.loc[8, "column"] == "Elev" and "missing value in 'Elev'" in rej.loc[8, "reason"]
    assert rej.loc[9, "reason"] == "duplicate of line 4"
    assert (res.rejects["table_name"] == "assessments").all()
    assert not res.rejects["raw"].str.contains("secret").any()
    assert json.loads(rej.loc[6, "raw"]) == {"Poäng": "abc"}  # the offending value only
    assert pd.isna(rej.loc[8, "raw"])  # an identifier column's value is never kept


def test_mapping_validation_messages(tmp_path):
    base = dict(SWEDISH_MAPPING)
    with pytest.raises(ConfigError, match=r"unknown canonical column 'points' for table 'assessments'; valid columns: learner_id, instrument, module, phase, item_id, score, max_score, timestamp"):
        load_mapping({**base, "columns": {**base["columns"], "points": "Poäng"}})
    with pytest.raises(ConfigError, match=r"unknown table 'grades'; valid tables: attempts, attempt_kcs, assessments, surveys, learners, items"):
        load_mapping({**base, "table": "grades"})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'colums'; valid keys: table, columns"):
        load_mapping({**base, "colums": {}})
    with pytest.raises(ConfigError, match=r"table 'assessments' needs column\(s\) 'score'"):
        load_mapping({**base, "columns": {k: v for k, v in base["columns"].items() if k != "score"}})
    with pytest.raises(ConfigError, match=r"'cohort' comes from the cohort argument"):
        load_mapping({**base, "constants": {"cohort": "x"}})
    with pytest.raises(ConfigError, match=r"options: unknown option\(s\) 'sep'; valid options: delimiter, decimal"):
        load_mapping({**base, "options": {"sep": ";"}})
    with pytest.raises(ConfigError, match=r"values: 'role' has a value map but no source column"):
        load_mapping({"table": "learners", "columns": {"learner_id": "Elev"}, "values": {"role": {"a": "b"}}})
    bad = write_yaml(tmp_path / "bad.yaml", "just text")
    with pytest.raises(ConfigError, match="bad.yaml: a mapping must be a YAML mapping"):
        load_mapping(bad)


def test_missing_source_column_names_file_and_columns(tmp_path, ps):
    p = swedish(tmp_path)
    spec = {**SWEDISH_MAPPING, "columns": {**SWEDISH_MAPPING["columns"], "item_id": "Question"}}
    m = write_yaml(tmp_path / "other.yaml", spec)
    with pytest.raises(SchemaError, match=r"prov.csv: column\(s\) 'Question' named in the mapping are not in the file; the file's columns are: Elev, Prov, Fas, Fråga"):
        read_file(p, cohort="vt24", pseudonymiser=ps, options={"mapping": str(m)})


def test_wrong_delimiter_and_no_mapping(tmp_path, ps):
    p = swedish(tmp_path)
    spec = {**SWEDISH_MAPPING, "options": {"decimal": ","}}  # forgot the delimiter
    m = write_yaml(tmp_path / "nodelim.yaml", spec)
    with pytest.raises(DataError, match=r"prov.csv: expected CSV file delimited by ',', found semicolons"):
        read_file(p, cohort="vt24", pseudonymiser=ps, options={"mapping": str(m)})
    lone = tmp_path / "lone.csv"
    lone.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"lone.csv: unknown format; .*lone.mapping.yaml"):
        sniff(lone)
    with pytest.raises(ConfigError, match=r"lone.csv: no column mapping; write lone.mapping.yaml beside it"):
        read_file(lone, cohort="x", pseudonymiser=ps, format="csv")


def test_real_hci_prepost_two_mappings(real_data, ps, tmp_path):
    """HCIprepost.csv is wide (score.pre, score.post): one mapping per phase reads it in place."""
    path = real_data / "homeostasis_concept_inventory_hci" / "HCIprepost.csv"
    raw = pd.read_csv(path)
    parts = []
    for phase, col in (("pre", "score.pre"), ("post", "score.post")):
        m = write_yaml(tmp_path / f"{phase}.yaml", {
            "table": "assessments",
            "columns": {"learner_id": "id", "score": col},
            "constants": {"instrument": "HCI", "phase": phase, "item_id": "total", "max_score": 20},
        })
        res = read_file(path, cohort="hci", pseudonymiser=ps, format="csv", options={"mapping": str(m)})
        assert res.rejects.empty and res.n_read == 16
        parts.append(res.tables["assessments"])
    a = pd.concat(parts, ignore_index=True)
    assert len(a) == 32 and a["learner_id"].nunique() == 16
    wide = a.pivot(index="learner_id", columns="phase", values="score")
    expected = raw.assign(learner_id=ps.series(raw["id"].astype(str))).set_index("learner_id")
    assert (wide.loc[expected.index, "pre"].to_numpy() == expected["score.pre"].to_numpy()).all()
    assert (wide.loc[expected.index, "post"].to_numpy() == expected["score.post"].to_numpy()).all()
    assert wide["post"].mean() == pytest.approx(raw["score.post"].mean())


def test_parquet_and_attempts_with_kcs(tmp_path, ps):
    df = pd.DataFrame({
        "who": ["anna.secret", "anna.secret", "bo.secret"],
        "q": ["q1", "q1", "q2"],
        "ok": ["wrong", "right", "right"],
        "when": pd.to_datetime(["2024-03-01 10:00", "2024-03-01 10:01", "2024-03-01 10:02"]),
        "skills": ["a~~b", "a~~b", "c"],
    })
    p = tmp_path / "log.parquet"
    df.to_parquet(p)
    write_yaml(tmp_path / "log.mapping.yaml", {
        "table": "attempts",
        "columns": {"learner_id": "who", "item_id": "q", "outcome": "ok", "timestamp": "when"},
        "values": {"outcome": {"wrong": "incorrect", "right": "correct"}},
        "kcs": {"Skills": "skills"},
    })
    assert sniff(p) == "parquet"
    res = read_file(p, cohort="c", pseudonymiser=ps)
    att = res.tables["attempts"]
    assert res.rejects.empty and list(att["outcome"]) == ["incorrect", "correct", "correct"]
    assert list(att["attempt"]) == [1, 2, 1] and (att["step_id"] == att["item_id"]).all()
    assert att["attempt_id"].str.startswith("csv_").all() and att["attempt_id"].is_unique
    assert list(att["source_line"]) == [2, 3, 4]
    kcs = res.tables["attempt_kcs"]
    assert len(kcs) == 5 and set(kcs["kc_model"]) == {"Skills"}
    assert not att["learner_id"].str.contains("secret").any()


def test_simulated_exports_round_trip(tmp_path, ps):
    """The cohort simulator writes export-like CSVs + mappings; ingest gives back its tables."""
    from research.simulate import simulate_cohort

    sim = simulate_cohort(n_learners=12, seed=3, cohort="rt")
    files = sim.write(tmp_path, formats=("datashop",))
    for table in ("assessments", "surveys", "learners", "items"):
        res = read_file(files[table], cohort="rt", pseudonymiser=ps)
        assert res.rejects.empty, res.rejects["reason"].head().tolist()
        got = res.tables[table]
        want = sim.tables[table].copy()
        if "learner_id" in want:
            want["learner_id"] = ps.series(want["learner_id"])
        key = [c for c in ("learner_id", "instrument", "phase", "item_id") if c in want]
        got = got.sort_values(key).reset_index(drop=True)
        want = want.sort_values(key).reset_index(drop=True)[list(got.columns)]
        pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=False, rtol=1e-9)


def test_a_broken_parquet_file_is_a_data_error_naming_it(tmp_path, ps):
    bad = tmp_path / "log.parquet"
    bad.write_bytes(b"not parquet at all")
    write_yaml(tmp_path / "log.mapping.yaml", {
        "table": "attempts", "columns": {"learner_id": "who", "item_id": "q", "outcome": "ok", "timestamp": "when"},
    })
    with pytest.raises(DataError, match=r"log.parquet: not a readable Parquet file"):
        read_file(bad, cohort="c", pseudonymiser=ps, format="parquet")
