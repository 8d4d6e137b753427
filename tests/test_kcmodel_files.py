"""KC-model files: DataShop's KC-model format and Q-matrices, exact round trips on ds76 and ds96."""

from __future__ import annotations

import filecmp

import pandas as pd
import pytest

from conftest import require_real_data
from research.errors import ConfigError, DataError
from research.kcmodel import export_kc_model, import_kc_model, read_kc_model_file, write_datashop
from research.kcmodel.files import step_kcs
from research.warehouse import Warehouse

DS76 = "datashop_ds76_geometry_area"
KCM_FILES = ["reference_ds76_kcm_export_step_stats_MyNewKCM.txt",
             "reference_ds76_kcm_export_step_stats_DecompArithDiam_Lasso.txt"]


@pytest.mark.parametrize("name", KCM_FILES)
def test_datashop_kcm_file_reads_and_writes_back_byte_for_byte(name, tmp_path):
    path = require_real_data(DS76, name)
    kf = read_kc_model_file(path)
    assert len(kf.cells) == 139
    out = write_datashop(kf, tmp_path / name)
    assert filecmp.cmp(path, out, shallow=False)


def test_multi_skill_lasso_model_is_read_as_a_multi_kc_model():
    kf = read_kc_model_file(require_real_data(DS76, KCM_FILES[1]))
    assert kf.model_names() == ["DecompArithDiam", "Lasso Model", "new KC model name"]
    q = kf.qmatrix("Lasso Model")
    first = q[(q["item_id"] == "BUILDING_A_SIDEWALK") & (q["step_id"] == "(LARGE-RECTANGLE-AREA QUESTION1)")]
    assert sorted(first["kc"]) == sorted(["Decompose-rectangle-area", "DecomposeArith-parallelogram-area",
                                          "Merge-Trap-ALT:PARALLELOGRAM-AREA"])
    # the empty model keeps every step, with no KC (nothing dropped)
    empty = kf.qmatrix("new KC model name")
    assert len(empty) == 139 and empty["kc"].isna().all()


def _per_step(frame, model):
    f = frame[frame["kc_model"] == model] if "kc_model" in frame else frame
    f = f[f["kc"].notna()]
    return f.groupby(["item_id", "step_id"])["kc"].apply(lambda s: tuple(sorted(s))).to_dict()


@pytest.fixture(scope="module")
def ds76_wh(tmp_path_factory):
    path = require_real_data(DS76, "ds76_student_step_partial_4students_48kcmodels.txt")
    wh = Warehouse(tmp_path_factory.mktemp("kcm") / "wh.duckdb")
    wh.ingest([path], cohort="ds76")
    yield wh
    wh.close()


def test_ds76_kcm_import_refuses_unknown_steps_then_round_trips_exactly(ds76_wh, tmp_path):
    path = require_real_data(DS76, KCM_FILES[1])
    with pytest.raises(DataError, match=r"26 step\(s\) of KC model 'Lasso Model' are not steps of cohort 'ds76': line \d+"):
        import_kc_model(ds76_wh, "ds76", path, model="Lasso Model", as_name="Lasso import")
    res = import_kc_model(ds76_wh, "ds76", path, model="Lasso Model", as_name="Lasso import", allow_unused_steps=True)
    assert res.n_steps == 113 and len(res.unused_steps) == 26 and "not in the cohort" in str(res)
    with pytest.raises(ConfigError, match="already has a KC model 'Lasso import'.*--replace"):
        import_kc_model(ds76_wh, "ds76", path, model="Lasso Model", as_name="Lasso import", allow_unused_steps=True)
    out = export_kc_model(ds76_wh, "ds76", "Lasso import", tmp_path / "lasso.txt")
    with pytest.raises(ConfigError, match="exists.*--replace"):
        export_kc_model(ds76_wh, "ds76", "Lasso import", out)
    back = read_kc_model_file(out).qmatrix("Lasso import")
    truth = read_kc_model_file(path).qmatrix("Lasso Model")
    steps = set(zip(back["item_id"], back["step_id"]))
    truth = truth[[(i, s) in steps for i, s in zip(truth["item_id"], truth["step_id"])]]
    assert len(steps) == 113 and _per_step(back, "Lasso import") == _per_step(truth, "Lasso Model")
    # the second import of the exported file gives the same model again, replacing it only when asked
    res2 = import_kc_model(ds76_wh, "ds76", out, as_name="Lasso import", replace=True)
    assert res2.replaced and res2.n_attempt_kcs == res.n_attempt_kcs


def test_ds96_kc_models_round_trip_through_both_formats(tmp_path):
    path = require_real_data("datashop_ds96_student_step_and_tx", "ds96_student_step_export.txt")
    with Warehouse(tmp_path / "wh.duckdb") as wh:
        wh.ingest([path], cohort="ds96")
        original = step_kcs(wh.con, "ds96")
        models = sorted(original["kc_model"].unique())
        out = export_kc_model(wh, "ds96", models, tmp_path / "ds96_kcm.txt")
        kf = read_kc_model_file(out)
        assert kf.model_names() == models
        for m in models:
            import_kc_model(wh, "ds96", out, model=m, as_name=f"{m} (file)")
            q = export_kc_model(wh, "ds96", f"{m} (file)", tmp_path / f"{m}.csv", format="qmatrix")
            import_kc_model(wh, "ds96", q, as_name=f"{m} (csv)")
        after = step_kcs(wh.con, "ds96")
        for m in models:
            want = _per_step(original, m)
            assert _per_step(after, f"{m} (file)") == want
            assert _per_step(after, f"{m} (csv)") == want


def test_bad_files_are_named(tmp_path, ds76_wh):
    dup = tmp_path / "dup.csv"
    dup.write_text("item_id,step_id,kc\nA,s1,K1\nA,s1,K1\n")
    with pytest.raises(DataError, match=r"appear more than once \(problem 'A', step 's1' on lines \[2, 3\]\)"):
        read_kc_model_file(dup)
    junk = tmp_path / "junk.txt"
    junk.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="neither a DataShop KC-model export"):
        read_kc_model_file(junk)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("item_id,step_id,kc\nNO_SUCH_PROBLEM,s1,K1\n")
    with pytest.raises(DataError, match=r"line 2: problem 'NO_SUCH_PROBLEM', step 's1'"):
        import_kc_model(ds76_wh, "ds76", unknown)


def test_changelog_records_a_kc_model_revision():
    import json
    from pathlib import Path

    jsonschema = pytest.importorskip("jsonschema")
    from research.loop.changelog import read_changelog

    doc = {"changes": [{"date": "2026-12-15", "type": "kc_model_revised", "kc_model": "Coarse",
                        "into": "Coarse (LFA)", "file": "kc_models/coarse-lfa.txt"}]}
    schema = json.loads((Path(__file__).parents[1] / "data_schema" / "changelog.schema.json").read_text())
    jsonschema.validate(doc, schema["jsonSchema"])
    kcs = pd.DataFrame({"kc_model": ["Coarse", "Coarse (LFA)"], "kc": ["C1", "C1 [a]"]})
    log = read_changelog(doc, kcs_before=kcs[:1], kcs_after=kcs)
    assert log.kc_model_revision() == ("Coarse", "Coarse (LFA)")
    with pytest.raises(ConfigError, match=r"unknown KC model 'Coarse \(LFA\)' in the after cohort.*research kc-model import"):
        read_changelog(doc, kcs_before=kcs[:1], kcs_after=kcs[:1])


def test_forgetting_a_cohort_removes_its_kc_model_imports(tmp_path):
    path = require_real_data(DS76, "ds76_student_step_partial_4students_48kcmodels.txt")
    with Warehouse(tmp_path / "wh.duckdb") as wh:
        wh.ingest([path], cohort="ds76")
        import_kc_model(wh, "ds76", require_real_data(DS76, KCM_FILES[0]), as_name="mine", allow_unused_steps=True)
        assert wh.con.execute("SELECT count(*) FROM kc_model_files").fetchall()[0][0] == 1
        counts = wh.forget_cohort("ds76")
        assert counts["kc_model_files"] == 1
        assert wh.con.execute("SELECT count(*) FROM attempt_kcs").fetchall()[0][0] == 0


def test_a_correction_that_removes_steps_leaves_no_orphan_kc_rows(tmp_path):
    """An imported KC model's rows go with the attempts a corrected file no longer has."""
    from research.simulate import simulate_cohort

    sim = simulate_cohort(n_learners=25, seed=4, cohort="corr", planted=False)
    files = sim.write(tmp_path / "exports", formats=("datashop",))
    q = tmp_path / "fine.csv"
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.ingest([files["datashop"], files["items"]], cohort="corr")
        export_kc_model(wh, "corr", ["Fine"], q, format="qmatrix")
        import_kc_model(wh, "corr", q, as_name="Adopted")
        gone = sim.attempts["item_id"].iloc[0]
        raw = files["datashop"].read_text(encoding="utf-8").splitlines()
        col = raw[0].split("\t").index("Problem Name")
        kept = [raw[0]] + [ln for ln in raw[1:] if ln.split("\t")[col] != gone]
        assert len(kept) < len(raw)
        files["datashop"].write_text("\n".join(kept) + "\n", encoding="utf-8")
        wh.ingest([files["datashop"]], cohort="corr")  # the corrected file replaces its earlier version
        orphans = wh.con.execute(
            """SELECT k.kc_model, count(*) FROM attempt_kcs k WHERE k.cohort = 'corr' AND NOT EXISTS
               (SELECT 1 FROM attempts a WHERE a.cohort = k.cohort AND a.attempt_id = k.attempt_id) GROUP BY ALL""").fetchall()
        assert orphans == []
        k = step_kcs(wh.con, "corr", ["Adopted", "Fine"])
        per = lambda m: set(map(tuple, k.loc[k["kc_model"] == m, ["item_id", "step_id", "kc"]].to_numpy()))  # noqa: E731
        assert gone not in {i for i, _, _ in per("Adopted")} and per("Adopted") == per("Fine")  # the kept steps keep theirs
        removed = wh.removals("corr")
        assert (removed.loc[removed["table_name"] == "attempt_kcs", "n_rows"] > 0).any()
