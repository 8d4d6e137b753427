"""Wide files (one row per learner, one column per item) through the mapping's `wide:` block."""

from __future__ import annotations

import pytest

from research.errors import ConfigError, SchemaError
from research.ingest import read_file
from research.pseudonym import Pseudonymiser

PS = Pseudonymiser(key=b"k-wide")
MATRIX = "Item 1,Item 2,Item 3,gender\n1,0,1,0\n0,,1,1\n1,1,x,0\n"


def _read(tmp_path, text: str, mapping: dict, name: str = "matrix.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return read_file(path, cohort="c", pseudonymiser=PS, options={"mapping": mapping})


TEST = {"table": "assessments", "wide": {"columns": r"^Item (?P<item_id>\d+)$", "value": "score", "row_id": "learner_id"},
        "constants": {"instrument": "HCI", "phase": "post", "max_score": 1}}


def test_a_0_1_matrix_becomes_one_row_per_learner_and_item_and_a_bad_cell_names_line_and_column(tmp_path):
    result = _read(tmp_path, MATRIX, TEST)
    a = result.tables["assessments"]
    assert len(a) == 7  # 9 cells, one blank (not answered), one rejected
    assert sorted(a["item_id"].unique()) == ["1", "2", "3"]
    assert a["learner_id"].nunique() == 3 and a["learner_id"].str.match(r"^p_[0-9a-f]{16}$").all()
    assert a.loc[a["item_id"] == "2", "score"].tolist() == [0.0, 1.0]
    rej = result.rejects
    assert len(rej) == 1
    row = rej.iloc[0]
    assert row["source_file"] == "matrix.csv" and int(row["source_line"]) == 4 and row["column"] == "Item 3"
    assert "'x' in 'Item 3' is not a number" in row["reason"]


def test_named_groups_and_values_fill_phase_from_the_column_name(tmp_path):
    text = "id,Q1_6,Q2_6,Q1_9,Q2_9\nS1,0,1,1,1\nS2,1,0,1,0\n"
    mapping = {"table": "assessments", "columns": {"learner_id": "id"},
               "wide": {"columns": r"^(?P<item_id>Q\d)_(?P<phase>6|9)$", "value": "score"},
               "values": {"phase": {"6": "pre", "9": "post"}}, "constants": {"instrument": "T", "max_score": 1}}
    a = _read(tmp_path, text, mapping).tables["assessments"]
    assert len(a) == 8 and set(a["phase"]) == {"pre", "post"}
    s1 = a[a["learner_id"] == PS.one("S1")].set_index(["phase", "item_id"])["score"]
    assert s1[("pre", "Q1")] == 0 and s1[("post", "Q1")] == 1


def test_a_map_of_columns_gives_each_its_own_values(tmp_path):
    text = "id\tPretest\tFinal Exam\n1\t10\t30\n2\t\t25\n"
    mapping = {"table": "assessments", "columns": {"learner_id": "id"},
               "wide": {"columns": {"Pretest": {"phase": "pre", "max_score": 20},
                                    "Final Exam": {"phase": "post", "max_score": 40}}, "value": "score"},
               "constants": {"instrument": "psy", "item_id": "total"}, "options": {"delimiter": "\t"}}
    a = _read(tmp_path, text, mapping, name="rollup.txt").tables["assessments"]
    assert len(a) == 3
    assert set(zip(a["phase"], a["max_score"])) == {("pre", 20.0), ("post", 40.0)}


def test_a_matrix_loads_as_attempts_without_kc_tags(tmp_path):
    mapping = {"table": "attempts", "wide": {"columns": r"^Item (?P<item_id>\d+)$", "value": "outcome", "row_id": "learner_id"},
               "values": {"outcome": {"1": "correct", "0": "incorrect"}}, "constants": {"timestamp": "2020-01-01 00:00:00"}}
    result = _read(tmp_path, MATRIX, mapping)
    att = result.tables["attempts"]
    assert len(att) == 7 and set(att["outcome"]) == {"correct", "incorrect"} and (att["attempt"] == 1).all()
    assert att["attempt_id"].is_unique and set(att["source_line"]) == {2, 3, 4}
    assert result.tables["attempt_kcs"].empty
    assert len(result.rejects) == 1 and result.rejects.iloc[0]["column"] == "Item 3"


def test_wide_mapping_mistakes_are_clear(tmp_path):
    with pytest.raises(SchemaError, match="no column of the file matches"):
        _read(tmp_path, MATRIX, {**TEST, "wide": {**TEST["wide"], "columns": "^Question"}})
    with pytest.raises(ConfigError, match="unknown key"):
        _read(tmp_path, MATRIX, {**TEST, "wide": {**TEST["wide"], "colums": "x"}})
    with pytest.raises(ConfigError, match="'value' must name the canonical column"):
        _read(tmp_path, MATRIX, {**TEST, "wide": {"columns": "^Item"}})
