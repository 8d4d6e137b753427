"""DataShop adapters on real public exports (read in place from ../shared/data).

Expected counts are computed here, independently, with plain pandas on the raw file, or
quoted from the datasets' PROVENANCE.md.
"""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from research.errors import DataError
from research.ingest import read_file, sniff
from research.pseudonym import Pseudonymiser

DS76_TX = ("datashop_ds76_geometry_area", "ds76_tx_All_Data_74_2018_0912_070949_partial_7students.txt")
DS76_STEP = ("datashop_ds76_geometry_area", "ds76_student_step_partial_4students_48kcmodels.txt")
DS96_TX = ("datashop_ds96_student_step_and_tx", "ds96_tx_export_example.txt")
DS96_STEP = ("datashop_ds96_student_step_and_tx", "ds96_student_step_export.txt")
OLI_TX = ("oli_chemistry_datashop_tx", "oli_general_chemistry_1_2021_tx.txt")
DS6224 = ("oli_chemistry_datashop_tx", "ds6224_tx_All_Data_8657_2024_0824_140746.txt")


@pytest.fixture(scope="module")
def ps():
    return Pseudonymiser(key=b"test-key-not-secret")


def raw(path) -> pd.DataFrame:
    """The raw export as pandas reads it by itself (duplicate names get .1 suffixes)."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE)


def kc_rows(df: pd.DataFrame, columns: list[str]) -> int:
    """attempt x KC pairs of one model: the union over its columns of the ~~-split cells."""
    total = 0
    cells = df[columns].to_numpy()
    for row in cells:  # independent reference computation, small files only
        kcs = {k.strip() for cell in row for k in cell.split("~~") if k.strip()}
        total += len(kcs)
    return total


def assert_no_raw_ids(result, raw_ids):
    raw_ids = set(raw_ids)
    for name, table in result.tables.items():
        for col in table.columns:
            if table[col].dtype == "string" or table[col].dtype == object:
                assert not set(table[col].dropna().unique()) & raw_ids, f"raw id in {name}.{col}"
    for text in result.rejects["raw"].dropna():
        assert not any(r in text for r in raw_ids), "raw id in a reject"


def assert_canonical(result):
    att = result.tables["attempts"]
    assert att["learner_id"].str.fullmatch(r"p_[0-9a-f]{16}").all()
    assert att["outcome"].isin(["correct", "incorrect", "hint"]).all()
    assert att["attempt"].min() >= 1
    assert att["attempt_id"].is_unique
    assert att["timestamp"].notna().all()
    assert att["source_line"].min() >= 2
    assert att["source_line"].is_unique
    kcs = result.tables["attempt_kcs"]
    assert set(kcs["attempt_id"]) <= set(att["attempt_id"])
    assert not kcs.duplicated(["attempt_id", "kc_model", "kc"]).any()
    assert result.n_read == len(att) + len(result.rejects)


@pytest.fixture(scope="module")
def ds76(ps):
    from conftest import require_real_data

    path = require_real_data(*DS76_TX)
    return path, read_file(path, cohort="ds76", pseudonymiser=ps)


def test_sniff_real_files(real_data):
    assert sniff(real_data.joinpath(*DS76_TX)) == "datashop"
    assert sniff(real_data.joinpath(*DS96_TX)) == "datashop"
    assert sniff(real_data.joinpath(*DS6224)) == "datashop"
    assert sniff(real_data.joinpath(*DS76_STEP)) == "datashop-step"
    assert sniff(real_data.joinpath(*DS96_STEP)) == "datashop-step"
    rollup = real_data / "oli_chemistry_datashop_tx" / "oli_general_chemistry_1_2021_problem_rollup.txt"
    with pytest.raises(DataError, match=r"problem_rollup.txt: a DataShop export of a kind we do not read .*format datashop-step"):
        sniff(rollup)


def test_ds76_tx_counts_match_pandas(ds76):
    path, result = ds76
    df = raw(path)
    att = result.tables["attempts"]
    assert len(df) == 492 and result.n_read == 492
    assert len(att) == 492 and result.rejects.empty
    assert att["learner_id"].nunique() == df["Anon Student Id"].nunique() == 7
    assert att[["item_id", "step_id"]].drop_duplicates().shape[0] == df[["Problem Name", "Step Name"]].drop_duplicates().shape[0]
    assert att["outcome"].value_counts().to_dict() == {"correct": int((df.Outcome == "CORRECT").sum()), "incorrect": int((df.Outcome == "INCORRECT").sum())}
    assert (att["attempt_id"].to_numpy() == df["Transaction Id"].to_numpy()).all()
    assert (att["attempt"].to_numpy() == df["Attempt At Step"].astype(int).to_numpy()).all()
    assert (att["source_line"].to_numpy() == np.arange(2, 494)).all()
    assert_canonical(result)


def test_ds76_tx_kc_models(ds76):
    path, result = ds76
    df = raw(path)
    kcs = result.tables["attempt_kcs"]
    header = open(path, encoding="utf-8").readline().rstrip("\n").split("\t")
    models = {h[4:-1] for h in header if h.startswith("KC (")}
    assert set(kcs["kc_model"]) <= models
    for model in ["Original", "Lasso Model", "Single-KC", "Unique-step"]:
        columns = [c for c in df.columns if c == f"KC ({model})" or c.startswith(f"KC ({model}).")]
        expected = kc_rows(df, columns)
        got = int((kcs["kc_model"] == model).sum())
        assert got == expected, model
    original = kcs[kcs["kc_model"] == "Original"]
    assert original["kc"].str.startswith("ALT:").all()
    assert original["kc"].nunique() == df.loc[df["KC (Original)"] != "", "KC (Original)"].str.split("~~").explode().nunique()


def test_ds76_tx_timestamps_are_utc(ds76):
    _, result = ds76
    att = result.tables["attempts"]
    # 1996-02-01 00:00:48 US/Eastern (EST, UTC-5) -> 05:00:48 UTC
    assert att.loc[0, "timestamp"] == pd.Timestamp("1996-02-01 05:00:48")
    assert att["module"].eq("Area").all() and att["page"].isna().all()


def test_ds76_tx_pseudonymised(ds76):
    path, result = ds76
    assert_no_raw_ids(result, raw(path)["Anon Student Id"].unique())
    again = read_file(path, cohort="ds76", pseudonymiser=Pseudonymiser(key=b"test-key-not-secret"))
    assert again.tables["attempts"]["learner_id"].equals(result.tables["attempts"]["learner_id"])


def test_ds96_tx_outcomes_and_multiskill(real_data, ps):
    path = real_data.joinpath(*DS96_TX)
    result = read_file(path, cohort="ds96", pseudonymiser=ps)
    att = result.tables["attempts"]
    # PROVENANCE.md: 1,873 transactions: CORRECT 993 / INCORRECT 750 / HINT 130
    assert result.n_read == 1873 and len(att) == 1873
    assert att["outcome"].value_counts().to_dict() == {"correct": 993, "incorrect": 750, "hint": 130}
    assert att["module"].str.startswith("u").all() and att["page"].notna().all()
    df = raw(path)
    kcs = result.tables["attempt_kcs"]
    default_cols = [c for c in df.columns if c.startswith("KC (Default)")]
    assert len(default_cols) == 3
    assert int((kcs["kc_model"] == "Default").sum()) == kc_rows(df, default_cols)
    first = kcs[kcs["attempt_id"] == df.loc[0, "Transaction Id"]]
    assert set(first.loc[first.kc_model == "Default", "kc"]) == {"english_text_answer", "english_text_question", "video_preview"}
    assert att["problem_view"].isna().sum() == (df["Problem View"] == "").sum()
    assert_canonical(result)
    assert_no_raw_ids(result, df["Anon Student Id"].unique())


def test_oli_chemistry_blank_outcomes_skipped(real_data, ps):
    path = real_data.joinpath(*OLI_TX)
    result = read_file(path, cohort="chem", pseudonymiser=ps)
    att, rej = result.tables["attempts"], result.rejects
    # PROVENANCE.md: CORRECT 1471 / INCORRECT 683 / HINT 15 / blank 420
    assert att["outcome"].value_counts().to_dict() == {"correct": 1471, "incorrect": 683, "hint": 15}
    assert (rej["kind"] == "skipped").sum() == 420 and len(rej) == 420
    assert rej["reason"].str.contains("not an attempt").all()
    assert rej["reason"].str.contains("VIEW_PAGE").any()
    assert (rej["column"] == "Outcome").all()
    # America/New_York in September is EDT (UTC-4): 11:31:48 local -> 15:31:48 UTC
    assert att.loc[0, "timestamp"] == pd.Timestamp("2021-09-16 15:31:48")
    # Sequence / Unit / Module: page = innermost level, module = the one above it
    assert (att.loc[0, "module"], att.loc[0, "page"]) == ("Foundations of Chemistry", "Properties of Matter")
    assert_canonical(result)
    assert_no_raw_ids(result, raw(path)["Anon Student Id"].unique())


def test_ds6224_duplicate_level_columns(real_data, ps):
    path = real_data.joinpath(*DS6224)
    result = read_file(path, cohort="ds6224", pseudonymiser=ps)
    att = result.tables["attempts"]
    assert result.n_read == 5553
    assert (result.rejects["kind"] == "skipped").sum() == 213
    assert att["outcome"].value_counts().to_dict() == {"correct": 3248, "incorrect": 1773, "hint": 319}
    df = raw(path)
    assert ["Level (Container)", "Level (Container).1", "Level (Container).2", "Level (Page)"] == [c for c in df.columns if c.startswith("Level")]
    graded = df[df.Outcome != ""]
    assert (att["module"].to_numpy() == graded["Level (Container).2"].to_numpy()).all()
    assert (att["page"].to_numpy() == graded["Level (Page)"].to_numpy()).all()
    path_mode = read_file(path, cohort="ds6224", pseudonymiser=ps, options={"module_level": "path"})
    assert path_mode.tables["attempts"].loc[0, "module"] == "Curriculum / Chemical Equilibrium / Concepts of Chemical Equilibrium"
    assert att["learner_id"].nunique() == 15
    assert_canonical(result)


def test_ds6224_kcs_are_learning_objectives(real_data, ps):
    path = real_data.joinpath(*DS6224)
    result = read_file(path, cohort="ds6224", pseudonymiser=ps)
    kcs = result.tables["attempt_kcs"]
    assert set(kcs["kc_model"]) == {"Default", "Single-KC", "Unique-step"}
    assert "Explain the dynamic nature of equilibrium." in set(kcs["kc"])


# ----------------------------------------------------------------------------- student-step


def expected_attempts(df: pd.DataFrame) -> int:
    return int(df[["Incorrects", "Hints", "Corrects"]].astype(int).sum().sum())


def test_ds76_student_step(real_data, ps):
    path = real_data.joinpath(*DS76_STEP)
    result = read_file(path, cohort="ds76", pseudonymiser=ps)
    df = raw(path)
    att, kcs = result.tables["attempts"], result.tables["attempt_kcs"]
    assert len(df) == 230 and result.n_read == 230 and result.rejects.empty
    assert len(att) == expected_attempts(df)
    assert att["learner_id"].nunique() == df["Anon Student Id"].nunique() == 4
    # attempt 1 carries the First Attempt outcome
    firsts = att[att["attempt"] == 1]
    assert len(firsts) == 230
    assert firsts["outcome"].value_counts().to_dict() == df["First Attempt"].value_counts().to_dict()
    # every outcome total equals DataShop's counts
    totals = att["outcome"].value_counts()
    assert totals.get("incorrect", 0) == df["Incorrects"].astype(int).sum()
    assert totals.get("correct", 0) == df["Corrects"].astype(int).sum()
    # US-style times ("2/1/1996 0:00") parse
    assert firsts["timestamp"].min() == pd.Timestamp("1996-02-01 00:00:00")
    # 48 KC models, each KC with DataShop's own opportunity count
    header = open(path, encoding="utf-8").readline().rstrip("\r\n").split("\t")
    assert kcs["kc_model"].nunique() == sum(h.startswith("KC (") for h in header) == 48
    orig = kcs[kcs["kc_model"] == "Original"].merge(att[["attempt_id", "source_line", "attempt"]], on="attempt_id")
    orig = orig[orig["attempt"] == 1].sort_values("source_line")
    has = df["KC (Original)"] != ""
    assert (orig["kc"].to_numpy() == df.loc[has, "KC (Original)"].to_numpy()).all()
    assert (orig["opportunity"].to_numpy() == df.loc[has, "Opportunity (Original)"].astype(int).to_numpy()).all()
    # multi-KC cells are split in parallel with their opportunities
    lasso = df.loc[0, "KC (Lasso Model)"].split("~~")
    first_id = att.loc[att["source_line"] == 2, "attempt_id"].iloc[0]
    got = kcs[(kcs.attempt_id == first_id) & (kcs.kc_model == "Lasso Model")]
    assert sorted(got["kc"]) == sorted(lasso) and (got["opportunity"] == 1).all()
    assert_no_raw_ids(result, df["Anon Student Id"].unique())
    assert att["attempt_id"].is_unique


def test_ds96_student_step(real_data, ps):
    path = real_data.joinpath(*DS96_STEP)
    result = read_file(path, cohort="ds96", pseudonymiser=ps)
    df = raw(path)
    att = result.tables["attempts"]
    assert result.n_read == 951 and result.rejects.empty
    # PROVENANCE.md: First Attempt correct 660 / incorrect 279 / hint 12
    assert att.loc[att["attempt"] == 1, "outcome"].value_counts().to_dict() == {"correct": 660, "incorrect": 279, "hint": 12}
    assert len(att) == expected_attempts(df)
    assert att["outcome"].value_counts()["hint"] == df["Hints"].astype(int).sum()
    # Problem Hierarchy "Unit u2, Section nc" -> module u2, page nc
    row0 = att[att["source_line"] == 2].iloc[0]
    assert (row0["module"], row0["page"]) == ("u2", "nc")
    # the canonical order: first attempt, remaining incorrects, hints, the final correct last
    step = att[att["source_line"] == 2].sort_values("attempt")
    n_inc, n_hint, n_cor = (int(df.loc[0, c]) for c in ("Incorrects", "Hints", "Corrects"))
    assert list(step["outcome"]) == ["incorrect"] * n_inc + ["hint"] * n_hint + ["correct"] * n_cor
    assert step["timestamp"].is_monotonic_increasing
    assert step["timestamp"].iloc[0] == pd.Timestamp(df.loc[0, "First Transaction Time"])
    assert step["timestamp"].iloc[-1] == pd.Timestamp(df.loc[0, "Correct Transaction Time"])
    assert step["duration_s"].sum() == pytest.approx(float(df.loc[0, "Step Duration (sec)"]))
    kcs = result.tables["attempt_kcs"]
    default = kcs[(kcs.attempt_id == step["attempt_id"].iloc[0]) & (kcs.kc_model == "Default")]
    assert set(default["kc"]) == {"english_text_answer", "english_text_question", "video_preview"}
    assert_no_raw_ids(result, df["Anon Student Id"].unique())


def test_student_step_and_tx_agree_on_ds96(real_data, ps):
    """ds96 as transactions and as student-steps (two exports, anonymised apart): the expanded
    student-steps reproduce the transaction outcome totals (hints exactly, the rest within 1%)."""
    step = read_file(real_data.joinpath(*DS96_STEP), cohort="a", pseudonymiser=ps).tables["attempts"]
    tx = read_file(real_data.joinpath(*DS96_TX), cohort="b", pseudonymiser=ps).tables["attempts"]
    assert step["learner_id"].nunique() == tx["learner_id"].nunique() == 7
    s, t = step["outcome"].value_counts(), tx["outcome"].value_counts()
    assert s["hint"] == t["hint"] == 130
    for outcome in ("correct", "incorrect"):
        assert abs(s[outcome] - t[outcome]) / t[outcome] < 0.01
