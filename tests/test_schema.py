"""Validation against the Table Schemas in data_schema/ (research.schema)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from research.errors import SchemaError
from research.paths import schema_dir
from research.schema import canonical_tables, load_schema, require_columns, validate

GOOD = "p_0123456789abcdef"


def _attempts(**overrides):
    base = {
        "cohort": ["c", "c"],
        "attempt_id": ["a1", "a2"],
        "learner_id": [GOOD, GOOD],
        "item_id": ["i1", "i1"],
        "step_id": ["s1", "s1"],
        "attempt": [1, 2],
        "outcome": ["incorrect", "correct"],
        "timestamp": ["2026-01-01 10:00:00", "2026-01-01 10:00:30"],
        "source_file": "f.txt",
        "source_line": [2, 3],
    }
    base.update(overrides)
    return pd.DataFrame(base)


def test_schemas_are_read_from_data_schema_not_restated():
    on_disk = json.loads((schema_dir() / "attempts.schema.json").read_text())
    assert load_schema("attempts").field_names == [f["name"] for f in on_disk["fields"]]
    assert set(canonical_tables()) == {"attempts", "attempt_kcs", "assessments", "surveys", "learners", "items"}


def test_valid_rows_pass_and_are_typed():
    out = validate(_attempts(), "attempts")
    assert out.rejects.empty
    assert len(out.valid) == 2
    assert str(out.valid["attempt"].dtype) == "Int64"
    assert str(out.valid["timestamp"].dtype).startswith("datetime64")
    assert out.valid.columns.tolist()[: len(load_schema("attempts").field_names)] == load_schema("attempts").field_names


@pytest.mark.parametrize(
    ("override", "column", "reason"),
    [
        ({"outcome": ["correct", "wrong"]}, "outcome", "value wrong is not one of: correct, incorrect, hint"),
        ({"attempt": [1, 0]}, "attempt", "below the minimum 1"),
        ({"attempt": [1, "two"]}, "attempt", "not a valid integer: two"),
        ({"timestamp": ["2026-01-01", "31/12/2026"]}, "timestamp", "not a valid datetime: 31/12/2026"),
        ({"learner_id": [GOOD, "Stu_123"]}, "learner_id", "does not match the pattern"),
        ({"item_id": ["i1", None]}, "item_id", "value is missing"),
        ({"attempt_id": ["a1", "a1"]}, "attempt_id", "duplicate of the primary key (cohort, attempt_id) of line 2"),
    ],
)
def test_each_constraint_rejects_with_file_line_column_and_reason(override, column, reason):
    out = validate(_attempts(**override), "attempts")
    assert len(out.valid) == 1
    [rej] = out.rejects.to_dict("records")
    assert rej["source_file"] == "f.txt"
    assert rej["source_line"] == 3
    assert rej["column"] == column
    assert reason in rej["reason"]
    if column == "learner_id":  # an identifier's value is never copied into raw
        assert pd.isna(rej["raw"])
    else:  # raw is the offending value only, never the whole row
        assert list(json.loads(rej["raw"])) == [column]


def test_every_failure_of_a_row_is_listed():
    out = validate(_attempts(outcome=["correct", "bad"], attempt=[1, -1]), "attempts")
    reason = out.rejects["reason"].iloc[0]
    assert "outcome:" in reason and "attempt:" in reason


def test_missing_required_column_rejects_every_row_and_require_columns_names_it():
    frame = _attempts().drop(columns=["outcome"])
    out = validate(frame, "attempts")
    assert out.valid.empty and (out.rejects["column"] == "outcome").all()
    with pytest.raises(SchemaError, match="lacks required column\\(s\\) outcome"):
        require_columns(frame, "attempts", what="transactions.txt")


def test_unknown_schema_lists_valid_names():
    with pytest.raises(SchemaError, match="canonical tables: attempts"):
        load_schema("atempts")


def test_one_million_rows_validate_in_one_vectorised_pass():
    n = 1_000_000
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "cohort": "c",
            "attempt_id": np.arange(n).astype(str),
            "learner_id": GOOD,
            "item_id": "i",
            "step_id": "s",
            "attempt": rng.integers(0, 4, n),  # about a quarter are 0: invalid
            "outcome": "correct",
            "timestamp": pd.Timestamp("2026-01-01"),
            "source_line": np.arange(n) + 2,
        }
    )
    out = validate(frame, "attempts", source_file="big.txt")
    assert len(out.valid) + len(out.rejects) == n
    assert len(out.rejects) == int((frame["attempt"] == 0).sum())


def test_blank_text_is_trim_equals_empty_for_every_first_character():
    """The fast blank test agrees with ``trim(x) = ''`` on strings beginning with each of the first
    12,289 code points (controls, spaces, NBSP, ideographic space included), alone, padded and
    followed by text, and on NULL."""
    import duckdb

    from research.schema import blank_text

    chars = [chr(c) for c in range(1, 0x3001) if not 0xD800 <= c <= 0xDFFF] + ["\u205f", "\ufeff", "\U0001f600"]
    values = [v for c in chars for v in (c, c + c, c + " ", " " + c, c + "a", c + "  ")] + ["", None, "   ", "a b"]
    con = duckdb.connect()
    con.register("v", pd.DataFrame({"x": pd.Series(values, dtype="string")}))
    diff = con.execute(f"SELECT x FROM v WHERE (trim(x) = '') IS DISTINCT FROM {blank_text('x')}").fetchall()
    assert diff == []
    assert con.execute(f"SELECT count(*) FROM v WHERE {blank_text('x')}").fetchall()[0][0] > 3  # it finds blanks
