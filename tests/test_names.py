"""Names are data (research.names): canonical cohort names, encoded URLs, CSV cells that are never formulas."""

from __future__ import annotations

import io
import unicodedata

import pandas as pd
import pytest

from research.errors import ConfigError
from research.names import (
    FORMULA_PREFIXES,
    MAX_NAME_LENGTH,
    cohort_name,
    csv_cell,
    fold,
    is_formula,
    neutralise_csv,
    restore_cell,
    restore_csv,
    url_path,
)


@pytest.mark.parametrize("name", ["demo", "2026-spring", "ds96", "Vår 2026", "kurs_1.b", "x" * MAX_NAME_LENGTH, "東京-1"])
def test_canonical_names_are_accepted_unchanged(name):
    assert cohort_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("demo/", "ends with a slash.*write 'demo'"),
        ("demo\\", "ends with a slash"),
        ("../x", "must start with a letter or a digit"),
        ("../../somewhere", "must start with a letter or a digit"),
        ("a/../../b", "path separator"),
        ("/etc", "path separator"),
        ("C:\\temp", "path separator|contains ':'"),
        ("..", "must start with a letter or a digit"),
        (".hidden", "must start with a letter or a digit"),
        ("-rf", "must start with a letter or a digit"),
        ("", "is empty"),
        ("a\x00b", "control or invisible character \\(U\\+0000\\)"),
        ("a\nb", "control or invisible character"),
        ("a\u202eb", "U\\+202E"),  # right-to-left override
        ("a\u200bb", "U\\+200B"),  # zero-width space
        ("\ud800", "U\\+D800"),  # a lone surrogate
        ("x" * (MAX_NAME_LENGTH + 1), "characters long; the limit is 100"),
        ("ä" * 100, None),  # 100 characters but 200 bytes: allowed exactly at the limit
        ("\u4e00" * 70, "the limit is 100 characters \\(200 bytes"),  # 70 characters, 210 bytes
        ("javascript:alert(1)", "contains ':'"),
        ("<script>", "must start with a letter"),
        ("a<b>", "contains '<'"),
        ("=HYPERLINK(1)", "must start with a letter"),
        ("a b", None),
        (" a", "must start with a letter|space at its start"),
        ("a ", "space at its start or end"),
        ("a  b", "two spaces"),
        ("CON", "reserved by Windows"),
        ("nul.txt", "reserved by Windows"),
        ("a*b", "contains '\\*'"),
        ("a?b", "contains '\\?'"),
        (42, "must be text"),
        (None, "must be text"),
    ],
)
def test_every_other_name_is_refused_with_the_reason(name, why):
    if why is None:
        assert cohort_name(name) == name
        return
    with pytest.raises(ConfigError, match=why):
        cohort_name(name)


def test_a_name_has_one_form_whatever_its_unicode_normalisation():
    nfd = unicodedata.normalize("NFD", "Vår-kurs")
    assert nfd != "Vår-kurs"
    assert cohort_name(nfd) == "Vår-kurs"
    assert fold("Demo") == fold("demo") == fold("DEMO")
    assert fold(nfd) == fold("VÅR-KURS")


def test_url_paths_from_names_are_relative_and_percent_encoded():
    assert url_path("javascript:alert(1)", "index.html") == "javascript%3Aalert%281%29/index.html"
    assert url_path("a b", "x.html") == "a%20b/x.html"
    assert url_path("../..", "x") == "..%2F../x"
    for hostile in ("javascript:x", "//evil.example/x", "data:text/html,<b>", "http://x", "\\\\host\\share", "a#b?c"):
        url = url_path(hostile)
        assert ":" not in url and "/" not in url and "#" not in url and "?" not in url and "\\" not in url


@pytest.mark.parametrize("prefix", FORMULA_PREFIXES)
def test_text_starting_like_a_formula_gets_a_quote_and_reads_back_exactly(prefix):
    value = prefix + "1+1"
    assert csv_cell(value) == "'" + value
    assert restore_cell(csv_cell(value)) == value
    assert not is_formula(csv_cell(value))


def test_neutralising_is_exactly_invertible_and_leaves_numbers_numeric():
    hostile = ["=SUM(A1)", "+1", "-x", "@cmd", "\tq", "\rq", "'=already", "''=twice", "'plain", "plain", "", None,
               "=HYPERLINK(\"http://x\",\"y\")", "-", "'", "ok=1"]
    frame = pd.DataFrame({
        "item_id": pd.array(hostile, dtype="string"),
        "kc": hostile,
        "estimate": [-1.5 + i for i in range(len(hostile))],
        "n": list(range(-3, len(hostile) - 3)),
        "group": pd.Categorical(["=a", "b"] * (len(hostile) // 2)),
    })
    out = neutralise_csv(frame)
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator="\r\n")
    back = pd.read_csv(io.StringIO(buf.getvalue()), dtype={"item_id": "string", "kc": "string", "group": "string"},
                       keep_default_na=False, na_values=[""])
    for col in ("item_id", "kc", "group"):
        assert not back[col].dropna().map(is_formula).any(), col
    assert pd.api.types.is_float_dtype(back["estimate"]) and back["estimate"].iloc[0] == -1.5
    assert pd.api.types.is_integer_dtype(back["n"]) and back["n"].iloc[0] == -3
    restored = restore_csv(back)
    expected = [v if v not in ("",) else None for v in hostile]
    assert [None if pd.isna(v) else v for v in restored["item_id"]] == expected
    assert [None if pd.isna(v) else v for v in restored["kc"]] == expected
    assert restore_csv(out).equals(frame)


def test_column_names_are_neutralised_too():
    out = neutralise_csv(pd.DataFrame({"=cmd": [1]}))
    assert list(out.columns) == ["'=cmd"]


def test_a_cohort_name_is_a_bound_value_in_sql_never_statement_text():
    from research.cohort import CohortData
    from research.describe import ingest_summary

    attempts = pd.DataFrame({"attempt_id": ["a1", "a2"], "learner_id": ["p1", "p2"], "module": ["=M1", "=M1"], "page": ["P", "P"],
                             "item_id": ["i'1", "i'1"], "step_id": ["s", "s"], "attempt": [1, 1], "outcome": ["correct", "incorrect"]})
    kcs = pd.DataFrame({"attempt_id": ["a1", "a2"], "kc_model": ["Fine", "Fine"], "kc": ["k", "k"]})
    empty = pd.DataFrame()
    for name in ("it's", 'say "hi"', "x'); DROP TABLE attempts; --"):
        data = CohortData(name, attempts, kcs, empty, empty, empty, empty)
        table = ingest_summary(data)
        assert table.loc[table["level"] == "cohort", "key"].tolist() == [name]
        assert table.loc[table["level"] == "item", "key"].tolist() == ["i'1"]


def test_a_notebook_out_dir_never_lands_outside_its_folders(tmp_path, monkeypatch):
    from research.paths import notebook_out_dir

    monkeypatch.setenv("RESEARCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="must start with a letter or a digit"):
        notebook_out_dir(None, "../outside")
    assert notebook_out_dir(None, "demo") == (tmp_path / "scratch" / "demo", notebook_out_dir(None, "demo")[1])
    assert "only `research run` writes" in notebook_out_dir("reports/demo", "demo")[1]
    run_folder = tmp_path / "reports" / ".demo.run-20260101T000000Z-abcdef"
    assert notebook_out_dir(run_folder, "demo") == (run_folder, None)
    elsewhere = tmp_path / "mine"
    assert notebook_out_dir(elsewhere, "demo") == (elsewhere, None)
    (elsewhere / "manifest.json").parent.mkdir()
    (elsewhere / "manifest.json").write_text("{}")
    assert notebook_out_dir(elsewhere, "demo")[0] == tmp_path / "scratch" / "demo"


def test_names_in_figure_labels_are_drawn_as_text_not_parsed_as_tex(tmp_path, monkeypatch):
    import io as _io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from research.notebook import setup
    from research.warehouse import Warehouse

    monkeypatch.setitem(matplotlib.rcParams, "text.parse_math", True)
    with Warehouse(tmp_path / "w.duckdb"):
        pass
    setup(cohort="x", warehouse=tmp_path / "w.duckdb", out_dir=tmp_path / "out")
    for name in ("$x^$", "a $$ b", "$\\frac{$", "$\\foo$ rule"):
        fig, ax = plt.subplots()
        ax.set_title(name)
        ax.set_xticks([0], [name])
        fig.savefig(_io.BytesIO())  # raised ValueError (mathtext) before
        assert ax.get_title() == name
        plt.close(fig)


@pytest.mark.parametrize("name", ["../escape", "=HYPERLINK(\"http://x\")", "a\u202eb", "<script>x</script>/", " spaced", "two  spaces"])
def test_ingest_and_pull_refuse_a_name_that_is_not_canonical_before_touching_the_warehouse(tmp_path, name):
    from contextlib import redirect_stderr, redirect_stdout

    from research.cli import main

    data = tmp_path / "a.csv"
    data.write_text("learner_id,instrument,phase,item_id,score,max_score\nL1,T,pre,1,1,1\n", encoding="utf-8")
    mapping = tmp_path / "a.mapping.yaml"
    mapping.write_text("table: assessments\ncolumns: {learner_id: learner_id, instrument: instrument, phase: phase, "
                       "item_id: item_id, score: score, max_score: max_score}\n", encoding="utf-8")
    wh = tmp_path / "w.duckdb"
    for argv in (["ingest", str(data), "--cohort", name, "--warehouse", str(wh)],
                 ["pull", "--lrs", "http://127.0.0.1:9/xAPI", "--cohort", name, "--warehouse", str(wh)]):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            rc = main(argv)
        assert rc == 1 and err.getvalue().startswith("error: --cohort "), (argv[0], err.getvalue())
        assert "Traceback" not in err.getvalue()
    assert not wh.exists()  # refused before the warehouse was opened
    assert not (tmp_path.parent / "escape").exists()
