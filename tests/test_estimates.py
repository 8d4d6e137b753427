"""One set of estimates behind every output (research.estimates, and the parameters that reach it).

The notebooks' own code (the code cells of notebooks 02, 03 and 05, run in this process on a
small simulated cohort) writes the estimate tables; the recommendations computed without
them (notebook 06 on its own, research.estimates.build_estimates) and the cohort
comparison must rest on the same numbers.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from research.errors import ConfigError
import research.estimates
from research.estimates import ESTIMATE_TABLES, EstimateSettings, build_estimates

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
#: cheaper than the notebooks' defaults, passed to both sides as papermill would
CHEAP = {"cv_top": 1, "n_boot": 20, "fit_2pl": False}


def _cells(name: str) -> tuple[str, list[str]]:
    nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, name
    return "".join(params[0]["source"]), ["".join(c["source"]) for c in code if c is not params[0]]


def _defaults(name: str) -> dict:
    source, _ = _cells(name)
    out = {}
    for node in ast.parse(source).body:
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        out[target.id] = ast.literal_eval(node.value)
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A small simulated cohort ingested into a warehouse, and its notebooks' output folder."""
    from research.cohort import load
    from research.simulate import simulate_cohort
    from research.warehouse import Warehouse

    import matplotlib

    matplotlib.use("Agg")
    folder = tmp_path_factory.mktemp("estimates")
    sim = simulate_cohort(n_learners=80, seed=21, cohort="est")
    written = sim.write(folder / "exports", formats=("datashop",))
    wh = folder / "w.duckdb"
    with Warehouse(wh) as w:
        w.ingest([Path(written[k]) for k in ("datashop", "learners", "items")], cohort="est")
    out = folder / "reports" / "est"
    for name in ("02_item_analysis.ipynb", "03_learning_curves.ipynb", "05_equity_and_engagement.ipynb"):
        params, cells = _cells(name)
        ns: dict = {}
        exec(params, ns)  # noqa: S102 - the notebook's own code, as papermill runs it
        ns.update(cohort="est", warehouse=str(wh), out_dir=str(out), **{k: v for k, v in CHEAP.items() if k in ns})
        for cell in cells:
            exec(cell, ns)  # noqa: S102
    return load("est", wh), out


def test_settings_defaults_are_the_notebooks_parameter_defaults():
    settings = EstimateSettings()
    checked = set()
    for name in ("02_item_analysis.ipynb", "03_learning_curves.ipynb", "05_equity_and_engagement.ipynb"):
        for key, value in _defaults(name).items():
            if hasattr(settings, key):
                expected = tuple(value) if isinstance(value, list) else value
                assert getattr(settings, key) == expected, f"{name}: {key}"
                checked.add(key)
    assert {"min_n", "fit_2pl", "draws", "kc_models", "kc_model", "cv_top", "n_boot", "purify", "funnel_level"} <= checked


def test_one_name_per_notebook_parameter():
    """A parameter name several notebooks declare has one meaning: the sampler's draws are ``draws`` everywhere."""
    names = {nb.name: set(_defaults(nb.name)) for nb in sorted(NOTEBOOKS.glob("0*.ipynb"))}
    everywhere = set().union(*names.values())
    assert not {"bayes_draws", "bayes_tune", "hdi_prob", "level"} & everywhere
    assert {"draws", "tune"} <= names["02_item_analysis.ipynb"] & names["04_learning_gains.ipynb"]


def test_recommendation_inputs_and_findings_equal_the_notebooks_tables(cohort, tmp_path):
    """Notebook 06 on its own (tables computed) finds what it finds from the notebooks' tables."""
    import research.recommend as recommend

    data, out = cohort
    from_notebooks, sources_nb = recommend.load_estimates(out)
    computed, sources = research.estimates.load_estimates(tmp_path, data=data, compute_missing=True,
                                                         settings=EstimateSettings(**CHEAP))
    built = [t for t in ("items", "distractors", "kcs", "kc_models", "dif", "funnel", "time_on_task")]
    assert set(sources.loc[sources["source"] == "computed", "table"]) == set(built)
    for name in built:
        assert name in from_notebooks, sources_nb
        pd.testing.assert_frame_equal(computed[name], from_notebooks[name], check_dtype=False, obj=name)
    n = int(data.attempts["learner_id"].nunique())
    kw = {"cohort": "est", "n_learners": n}
    cols = ["recommendation_id", "rule", "target_id", "kc_model", "estimate", "ci_low", "ci_high", "n", "rank"]
    pd.testing.assert_frame_equal(recommend.recommend(computed, None, **kw)[cols],
                                  recommend.recommend({k: from_notebooks[k] for k in built}, None, **kw)[cols])


def test_the_comparison_profile_rests_on_the_notebooks_item_and_kc_tables(cohort):
    from research.loop import comparison_settings, profile_cohort
    from research.recommend.inputs import read_table

    data, out = cohort
    profile = profile_cohort(data, recommend=False, settings=comparison_settings(**CHEAP))
    items = read_table(out / "items.csv").set_index("item_id").sort_index()
    mine = profile.items.set_index("item_id").sort_index()
    for col in ("facility", "discrimination", "difficulty", "difficulty_se", "infit_mnsq", "flags"):
        pd.testing.assert_series_equal(mine[col], items[col], check_dtype=False, check_names=False, check_index_type=False, obj=col)
    kcs = read_table(out / "kcs.csv").set_index(["kc_model", "kc"]).sort_index()
    mine = profile.kcs.set_index(["kc_model", "kc"]).sort_index()
    for col in ("slope", "slope_ci_low", "intercept", "category"):
        pd.testing.assert_series_equal(mine[col], kcs[col], check_dtype=False, check_names=False, check_index_type=False, obj=col)


def test_a_cohort_files_kc_model_reaches_notebooks_03_and_06_and_changes_the_kc_model_judged(cohort, tmp_path):
    import research.recommend as recommend
    from research.cohort_config import parse
    from research.pipeline import config_parameters, notebook_plan

    data, out = cohort
    tables, _ = recommend.load_estimates(out)
    best = tables["kc_models"].sort_values("bic")["kc_model"].iloc[0]
    other = next(m for m in tables["kc_models"]["kc_model"] if m != best)
    config = parse({"cohort": "est", "kc_model": other}, path=tmp_path / "est.yaml")
    nbs = [NOTEBOOKS / "03_learning_curves.ipynb", NOTEBOOKS / "06_recommendations.ipynb"]
    plan = notebook_plan(nbs, config_parameters(config, "en"), cohort="est")
    assert [params.get("kc_model") for _, params in plan] == [other, other]

    def judged(kc_model):
        config = recommend.load_config(None, kc_model=kc_model)
        recs = recommend.recommend(tables, config, cohort="est", n_learners=80)
        return set(recs.loc[recs["family"] == "kcs", "kc_model"].dropna())

    assert judged(None) == {best}
    assert judged(other) == {other}


def test_a_wrong_parameter_type_or_name_is_refused_before_anything_runs(tmp_path):
    from research.cohort_config import parse
    from research.pipeline import run_cohort

    nbs = [NOTEBOOKS / "02_item_analysis.ipynb", NOTEBOOKS / "03_learning_curves.ipynb"]
    reports = tmp_path / "reports"
    config = parse({"cohort": "est", "parameters": {"min_n": "abc"}}, path=tmp_path / "est.yaml")
    with pytest.raises(ConfigError, match=r"'min_n' of cohort 'est' must be a whole number \(int.*got 'abc'"):
        run_cohort("est", reports=reports, warehouse=tmp_path / "none.duckdb", config=config, notebooks=nbs)
    config = parse({"cohort": "est", "parameters": {"fit_2pl": "yes"}}, path=tmp_path / "est.yaml")
    with pytest.raises(ConfigError, match=r"'fit_2pl'.*must be true or false"):
        run_cohort("est", reports=reports, warehouse=tmp_path / "none.duckdb", config=config, notebooks=nbs)
    config = parse({"cohort": "est", "parameters": {"bayes_draws": 10}}, path=tmp_path / "est.yaml")
    with pytest.raises(ConfigError, match=r"bayes_draws .*declared parameters: .*draws.*kc_model.*min_n"):
        run_cohort("est", reports=reports, warehouse=tmp_path / "none.duckdb", config=config, notebooks=nbs)
    assert not reports.exists()  # nothing locked, ingested or run
    with pytest.raises(ConfigError, match="kc_model must be a KC model name"):
        parse({"cohort": "est", "kc_model": 3}, path=tmp_path / "est.yaml")


def test_the_cli_exits_1_on_a_wrong_parameter_type(tmp_path, capsys, monkeypatch):
    from research.cli import main

    cohorts = tmp_path / "cohorts"
    cohorts.mkdir()
    (cohorts / "est.yaml").write_text("parameters: {min_n: abc}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--cohort", "est", "--config-dir", str(cohorts), "--out", str(tmp_path / "reports")])
    err = capsys.readouterr().err
    assert code == 1
    assert "min_n" in err and "whole number" in err and "Traceback" not in err


def test_build_estimates_refuses_unknown_tables_and_says_why_a_table_is_missing():
    from research.simulate import simulate_cohort

    with pytest.raises(ConfigError, match="unknown estimate table.*valid: items"):
        build_estimates({}, tables=["itemz"])
    sim = simulate_cohort(n_learners=6, seed=2, cohort="tiny")
    est = build_estimates({"attempts": sim.attempts, "attempt_kcs": sim.attempt_kcs, "items": sim.items},
                          EstimateSettings(**CHEAP), tables=["dif", "funnel"])
    assert "dif" not in est.tables and "funnel" in est.tables
    dif = est.analyses.set_index("analysis").loc["dif"]
    assert dif["status"] == "skipped" and dif["message"]
    assert set(ESTIMATE_TABLES) >= set(est.tables)
    assert os.path.isdir(est.out_dir)
    from research.loop import profile_cohort

    profile = profile_cohort(sim, recommend=False)  # too few learners for DIF: said, never skipped in silence
    missing = profile.not_analysed()
    assert "dif" in set(missing["analysis"]) and missing["message"].str.len().gt(0).all()


def test_one_suppression_column_in_every_output_schema():
    """Every output table says why its figures are empty in ``suppressed_reason``; no other spelling."""
    from research.paths import schema_dir
    from research.privacy import SUPPRESSION_COLUMN, not_suppressed

    for path in sorted((schema_dir() / "outputs").glob("*.schema.json")):
        names = [f["name"] for f in json.loads(path.read_text(encoding="utf-8"))["fields"]]
        spelled = [n for n in names if n.startswith("suppress") or n in ("hidden", "masked", "is_suppressed")]
        assert spelled in ([], [SUPPRESSION_COLUMN]), f"{path.name}: {spelled}"
    frame = pd.DataFrame({SUPPRESSION_COLUMN: ["", None, "fewer than 10 learners"], "suppressed": [True, True, True]})
    assert not_suppressed(frame).tolist() == [True, True, False]  # the old flag column is not read


def test_every_estimator_records_one_set_of_provenance_keys_and_takes_ci_level():
    """AFM and Rasch fits (and, by their code, the Bayesian models) use research.provenance."""
    import inspect

    from research.estimate import afm, afm_bayes, dif, gains, irt, surveys
    from research.provenance import PROVENANCE_KEYS
    from research.simulate.afm import simulate_afm
    from research.simulate.irt import simulate_rasch

    sim = simulate_afm(30, 3, 4, seed=1)
    model = afm.AFM(ci_level=0.9).fit(sim.steps)
    assert set(PROVENANCE_KEYS) <= set(model.provenance_) and model.provenance_["settings"]["ci_level"] == 0.9
    wide = afm.AFM(ci_level=0.99).fit(sim.steps)
    assert ((wide.kcs_["slope_ci_high"] - wide.kcs_["slope_ci_low"]) >= (model.kcs_["slope_ci_high"] - model.kcs_["slope_ci_low"]) - 1e-12).all()
    rasch = irt.Rasch().fit(simulate_rasch(40, 5, seed=2).responses)
    assert set(PROVENANCE_KEYS) <= set(rasch.provenance_)
    for cls in (afm_bayes.BayesianAFM, gains.BayesianGainModel, surveys.BayesianOrdinalChange):
        source = inspect.getsource(cls)
        assert "provenance(" in source and "package_version" not in source, cls.__name__
        assert "sampler" in inspect.signature(cls).parameters, cls.__name__
    for fn in (dif.mantel_haenszel_dif, gains.gain_summary, surveys.cronbach_alpha, afm_bayes.BayesianAFM):
        params = inspect.signature(fn).parameters
        assert "ci_level" in params and not {"level", "hdi_prob"} & set(params), fn.__name__


def test_lazy_cohort_tables_are_read_on_first_use_and_equal_the_tables_read_at_once(cohort):
    from research.cohort import TABLES, CohortData, load

    data, out = cohort
    lazy = load("est", out.parent.parent / "w.duckdb", lazy=True)  # what a notebook's ctx.data is
    assert isinstance(lazy, CohortData) and not set(TABLES) & set(vars(lazy))  # nothing read yet
    pd.testing.assert_frame_equal(lazy.learners, data.learners)
    assert "attempts" not in vars(lazy) and "attempt_kcs" not in vars(lazy)
    for name in TABLES:
        pd.testing.assert_frame_equal(getattr(lazy, name), getattr(data, name))
        assert getattr(lazy, name) is getattr(lazy, name)  # read once
    assert lazy.kc_models() == data.kc_models()
    with pytest.raises(AttributeError):
        lazy.no_such_table
