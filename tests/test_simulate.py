"""Tests of research.simulate: the cohort simulator, its truth, and its raw exports.

The statistical checks compare what the simulated data shows against the truth the
simulator records (first-attempt facility, learning slopes with theta as offset,
Mantel-Haenszel DIF at equal true ability, item-rest correlation), so a simulator that
ignored its own parameters would fail them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import yaml
from statsmodels.stats.contingency_tables import StratifiedTable

from research.errors import ConfigError
from research.paths import schema_dir
from research.simulate import PLANTED, SimulatedCohort, simulate_cohort, simulate_followup

# The DataShop transaction header as the format spec states it (the contract with the adapter).
DATASHOP_HEADER = (
    "Row, Sample Name, Transaction Id, Anon Student Id, Session Id, Time, Time Zone, Duration (sec), "
    "Student Response Type, Student Response Subtype, Tutor Response Type, Tutor Response Subtype, "
    "Level (Module), Level (Page), Problem Name, Problem View, Problem Start Time, Step Name, Attempt At Step, "
    "Is Last Attempt, Outcome, Selection, Action, Input, Feedback Text, Feedback Classification, Help Level, "
    "Total Num Hints, KC (Fine), KC Category (Fine), KC (Coarse), KC Category (Coarse), School, Class"
).split(", ")
PANDAS_DTYPES = {"string": "string", "integer": "Int64", "number": "float64", "boolean": "boolean", "datetime": "datetime64[us]"}


@pytest.fixture(scope="session")
def big() -> SimulatedCohort:
    """A cohort large enough for the statistical checks (about 1 s to simulate)."""
    return simulate_cohort(n_learners=1500, seed=11)


@pytest.fixture(scope="session")
def small() -> SimulatedCohort:
    return simulate_cohort(n_learners=60, seed=5)


@pytest.fixture(scope="session")
def exported(small, tmp_path_factory) -> dict[str, Path]:
    return small.write(tmp_path_factory.mktemp("exports"), formats=("datashop", "xapi", "xapi-json"))


def _schema(table: str) -> dict:
    return json.loads((schema_dir() / f"{table}.schema.json").read_text(encoding="utf-8"))


def _first(sim: SimulatedCohort) -> pd.DataFrame:
    a = sim.attempts
    f = a.loc[a["attempt"] == 1, ["attempt_id", "learner_id", "item_id", "outcome", "timestamp"]].copy()
    f["correct"] = (f["outcome"] == "correct").astype(int)
    theta = sim.truth.learners.set_index("learner_id")
    f["theta"] = f["learner_id"].map(theta["theta"]).to_numpy(float)
    f["gender"] = f["learner_id"].map(theta["gender"]).to_numpy(object)
    return f


def _planted_item(sim: SimulatedCohort, label: str) -> str:
    items = sim.truth.items
    return items.loc[items["planted"] == label, "item_id"].item()


# ------------------------------------------------------------------ determinism and shape


def test_same_seed_same_cohort_and_other_seed_differs():
    a = simulate_cohort(n_learners=40, seed=3)
    b = simulate_cohort(n_learners=40, seed=3)
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    pd.testing.assert_frame_equal(a.truth.items, b.truth.items)
    pd.testing.assert_frame_equal(a.truth.learners, b.truth.learners)
    c = simulate_cohort(n_learners=40, seed=4)
    assert not a.attempts["outcome"].equals(c.attempts["outcome"]) or len(a.attempts) != len(c.attempts)


@pytest.mark.parametrize("table", ["attempts", "attempt_kcs", "assessments", "surveys", "learners", "items"])
def test_tables_have_the_canonical_columns_and_dtypes(small, table):
    schema = _schema(table)
    df = small.tables[table]
    assert list(df.columns) == [f["name"] for f in schema["fields"]]
    for f in schema["fields"]:
        assert str(df[f["name"]].dtype) == PANDAS_DTYPES[f.get("type", "string")], f["name"]
        cons = f.get("constraints", {})
        col = df[f["name"]]
        if cons.get("required"):
            assert col.notna().all(), f"{table}.{f['name']} has missing values"
        if "enum" in cons:
            assert set(col.dropna()) <= set(cons["enum"]), f["name"]
        if "minimum" in cons:
            assert (col.dropna() >= cons["minimum"]).all(), f["name"]
    pk = schema.get("primaryKey", [])
    if pk:
        assert not df.duplicated(pk).any(), f"{table} primary key {pk} not unique"
    assert (df["cohort"] == "demo").all()


def test_raw_ids_and_course_structure(small):
    assert small.learners["learner_id"].str.fullmatch(r"S\d{5}").all()
    items = small.items
    assert items["item_id"].str.fullmatch(r"M\d+\.P\d+\.I\d+").all()
    assert (items["position"].to_numpy() == np.arange(1, len(items) + 1)).all()
    assert set(items["answer_key"]) <= set("ABCD")
    a = small.attempts
    assert (a["step_id"] == a["item_id"]).all()
    assert set(a.loc[a["outcome"] != "hint", "response"]) <= set("ABCD")
    assert a.loc[a["outcome"] == "hint", "response"].isna().all()
    # timestamps increase within each learner; each learner's steps end with a correct answer
    ts = a["timestamp"].to_numpy()
    same = a["learner_id"].to_numpy()[1:] == a["learner_id"].to_numpy()[:-1]
    assert (ts[1:][same] >= ts[:-1][same]).all()
    last = a.groupby(["learner_id", "step_id"])["outcome"].last()
    assert (last == "correct").all()
    fine = small.truth.kcs.query("kc_model == 'Fine'")
    assert 12 <= len(fine) <= 18
    assert (small.truth.items["kc_fine"].str.contains("~~")).sum() >= 2
    assert "SimulatedCohort 'demo'" in repr(small) and "planted:" in small.describe()


def test_kcs_have_enough_opportunities(big):
    a = big.attempts
    kcs = big.attempt_kcs.query("kc_model == 'Fine'").merge(a.loc[a["attempt"] == 1, ["attempt_id", "learner_id"]], on="attempt_id")
    done = kcs.groupby(["kc", "learner_id"]).size()
    finished = big.truth.learners.loc[~big.truth.learners["dropped"], "learner_id"]
    per_kc = done[done.index.get_level_values("learner_id").isin(finished)].groupby("kc").median()
    assert (per_kc >= 4).all(), per_kc[per_kc < 4]


# ------------------------------------------------------------------ truth is visible in the data


def test_first_attempt_facility_tracks_the_truth(big):
    f = _first(big)
    obs = f.groupby("item_id")["correct"].mean()
    truth = big.truth.items.set_index("item_id")
    exp = truth.loc[obs.index, "expected_facility"]
    assert np.corrcoef(obs, exp)[0, 1] > 0.97
    assert (obs - exp).abs().max() < 0.1
    # difficulty is on the logit scale: harder items have lower facility
    assert np.corrcoef(obs, truth.loc[obs.index, "difficulty"])[0, 1] < -0.9
    assert obs[_planted_item(big, "too_easy")] > 0.93


def _slope(f: pd.DataFrame) -> tuple[float, float]:
    """Logistic slope of first-attempt success on opportunity, with the true theta as offset."""
    X = sm.add_constant(f["opportunity"].to_numpy(float))
    fit = sm.GLM(f["correct"].to_numpy(float), X, family=sm.families.Binomial(), offset=f["theta"].to_numpy(float)).fit()
    return float(fit.params[1]), float(fit.bse[1])


def test_no_learning_kc_is_flat_while_others_learn(big):
    f = _first(big)
    kcs = big.attempt_kcs.query("kc_model == 'Fine'")[["attempt_id", "kc"]]
    single = kcs[~kcs["attempt_id"].duplicated(keep=False)]  # single-KC steps only
    f = f.merge(single, on="attempt_id").sort_values(["learner_id", "timestamp"])
    f["opportunity"] = f.groupby(["learner_id", "kc"]).cumcount()
    truth = big.truth.kcs.query("kc_model == 'Fine'").set_index("kc")
    flat = truth.index[truth["planted"] == "no_learning_kc"].item()
    slope, se = _slope(f[f["kc"] == flat])
    assert abs(slope) < 2.5 * se + 0.02 and abs(slope) < 0.12
    err = 1 - f[f["kc"] == flat].groupby("opportunity")["correct"].mean()
    assert err.iloc[0] > 0.4  # moderately high error
    others = [k for k in truth.index if k != flat]
    slopes = pd.Series({k: _slope(f[f["kc"] == k])[0] for k in others})
    assert slopes.median() > 0.1
    assert np.corrcoef(slopes, truth.loc[others, "gamma"])[0, 1] > 0.3
    pooled = f[f["kc"] != flat].groupby("opportunity")["correct"].mean()
    assert pooled.iloc[3] > pooled.iloc[0] + 0.1


def test_dropout_page_shows_the_drop(big):
    a = big.attempts
    reached = a.groupby("page", sort=False)["learner_id"].nunique()
    pages = big.truth.pages.set_index("page")
    reached = reached.reindex(pages.index)
    kept = reached / reached.shift(1)
    drop_page = pages.index[pages["planted"] == "dropout_page"].item()
    assert kept[drop_page] < 0.88
    others = kept.drop(drop_page).dropna()
    assert (others > 0.93).all(), others[others <= 0.93]
    # weaker learners drop out more: dropped learners have lower theta
    t = big.truth.learners
    assert t.loc[t["dropped"], "theta"].mean() < t.loc[~t["dropped"], "theta"].mean() - 0.2
    assert t["last_position"].max() == len(big.items)


def test_dif_item_differs_by_group_at_equal_ability(big):
    f = _first(big)
    f = f[f["gender"].isin(["female", "male"])]
    f["stratum"] = pd.qcut(f["theta"], 5, labels=False)
    truth = big.truth.items.set_index("item_id")
    dif_item = _planted_item(big, "dif")
    assert truth.loc[dif_item, "dif_group"] == "gender=female"

    def mh_log_or(item):
        g = f[f["item_id"] == item]
        tables = [
            np.array([[((s["gender"] == grp) & (s["correct"] == c)).sum() for c in (1, 0)] for grp in ("female", "male")], float) + 0.5
            for _, s in g.groupby("stratum")
        ]
        return np.log(StratifiedTable(tables).oddsratio_pooled)

    assert mh_log_or(dif_item) < -0.7  # ~ -1.2 logits for women
    controls = truth.index[(truth["planted"] == "") & ~truth["practice"]][:6]
    assert all(abs(mh_log_or(i)) < 0.5 for i in controls)


def _item_rest(sim: SimulatedCohort) -> pd.Series:
    f = _first(sim)
    wide = f.pivot_table(index="learner_id", columns="item_id", values="correct")
    total = wide.sum(axis=1)
    count = wide.notna().sum(axis=1)
    out = {}
    for item in wide.columns:
        have = wide[item].notna() & (count > 10)
        rest = (total[have] - wide.loc[have, item]) / (count[have] - 1)
        out[item] = np.corrcoef(wide.loc[have, item], rest)[0, 1]
    return pd.Series(out)


def test_miskeyed_item_has_negative_item_rest_correlation(big):
    r = _item_rest(big)
    assert r[_planted_item(big, "miskeyed")] < -0.1
    assert r.drop(_planted_item(big, "miskeyed")).median() > 0.15
    truth = big.truth.items.set_index("item_id")
    mk = _planted_item(big, "miskeyed")
    assert truth.loc[mk, "true_key"] != truth.loc[mk, "course_key"]
    assert big.items.set_index("item_id").loc[mk, "answer_key"] == truth.loc[mk, "course_key"]
    # strong learners pick the truly right option on their first attempt and are marked wrong
    f = big.attempts[(big.attempts["item_id"] == mk) & (big.attempts["attempt"] == 1)]
    theta = f["learner_id"].map(big.truth.learners.set_index("learner_id")["theta"])
    picked_true = f["response"] == truth.loc[mk, "true_key"]
    assert theta[picked_true].mean() > theta[~picked_true].mean() + 0.3
    assert (f.loc[picked_true, "outcome"] == "incorrect").all()


def test_slow_page_takes_longer_than_planned(big):
    a = big.attempts[big.attempts["attempt"] == 1]
    planned = a["item_id"].map(big.items.set_index("item_id")["planned_duration_s"])
    ratio = (a["duration_s"] / planned).groupby(a["page"]).median()
    slow = big.truth.pages.loc[big.truth.pages["planted"] == "slow_page", "page"].item()
    assert ratio[slow] > 2.0 * ratio.drop(slow).median()


def test_assessment_gains_and_attrition_follow_the_truth(big):
    s = big.assessments
    totals = s.groupby(["learner_id", "instrument", "phase"])["score"].mean().unstack("phase").dropna()
    diff = (totals["post"] - totals["pre"]).groupby("instrument").mean()
    gains = big.truth.gains.set_index("instrument")["true_gain"]
    zero = gains.index[gains == 0]
    assert len(zero) == 1 and abs(diff[zero[0]]) < 0.03
    assert (diff[gains.index[gains > 0]] > 0.07).all()
    # drop-outs have no post test of the last module, finishers do
    last = big.truth.gains["instrument"].iloc[-1]
    post = set(s.loc[(s["phase"] == "post") & (s["instrument"] == last), "learner_id"])
    t = big.truth.learners
    assert post == set(t.loc[~t["dropped"], "learner_id"])
    assert set(s.loc[s["phase"] == "pre", "learner_id"]) == set(t["learner_id"])


def test_survey_change_follows_the_truth(big):
    s = big.surveys.copy()
    resp = s["response"].astype(float)
    s["level"] = np.where(s["reverse_coded"].to_numpy(dtype=bool), s["scale_max"] + s["scale_min"] - resp, resp)
    m = s.groupby(["learner_id", "construct", "phase"])["level"].mean().unstack("phase").dropna()
    change = (m["post"] - m["pre"]).groupby("construct").mean() / m["pre"].groupby("construct").std()
    truth = big.truth.surveys.set_index("construct")["true_change"]
    assert change["digital_self_efficacy"] > 0.3
    assert abs(change["problem_solving"]) < 0.1
    assert change.rank().equals(truth[change.index].rank())
    assert s["reverse_coded"].any()
    assert set(s["response"]) <= set(range(1, 6))


# ------------------------------------------------------------------ exports


def test_datashop_export_parses(small, exported):
    path = exported["datashop"]
    header = path.read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
    assert header == DATASHOP_HEADER
    tx = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    a = small.attempts
    assert len(tx) == len(a)
    assert (tx["Transaction Id"].to_numpy() == a["attempt_id"].to_numpy()).all()
    assert (tx["Anon Student Id"].to_numpy() == a["learner_id"].to_numpy()).all()
    assert set(tx["Outcome"]) == {"CORRECT", "INCORRECT", "HINT"}
    assert (tx["Outcome"].str.lower().to_numpy() == a["outcome"].to_numpy()).all()
    assert set(tx.loc[tx["Outcome"] == "HINT", "Student Response Type"]) == {"HINT_REQUEST"}
    assert set(tx.loc[tx["Outcome"] != "HINT", "Student Response Type"]) == {"ATTEMPT"}
    assert (pd.to_datetime(tx["Time"], format="%Y-%m-%d %H:%M:%S").to_numpy() == a["timestamp"].to_numpy()).all()
    dur = tx["Duration (sec)"]
    assert ((dur == ".") == a["duration_s"].isna().to_numpy()).all()
    np.testing.assert_allclose(pd.to_numeric(dur[dur != "."]).to_numpy(), a["duration_s"].dropna().to_numpy(), atol=1e-9)
    assert tx["KC (Fine)"].str.contains("~~").any()
    ans = tx["Outcome"] != "HINT"
    assert (tx.loc[ans, "Input"].to_numpy() == a.loc[ans.to_numpy(), "response"].to_numpy()).all()
    assert (tx["Attempt At Step"].astype(int).to_numpy() == a["attempt"].to_numpy()).all()
    assert (tx.groupby(["Anon Student Id", "Step Name"])["Is Last Attempt"].last() == "1").all()


def test_xapi_lines_parse_with_required_fields(small, exported):
    lines = exported["xapi"].read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(small.attempts)
    st = [json.loads(x) for x in lines]
    a = small.attempts
    ext = "https://w3id.org/xapi/course-research"
    for s, (_, row) in zip(st[:300], a.head(300).iterrows()):
        assert {"id", "actor", "verb", "object", "result", "timestamp", "context"} <= set(s)
        assert s["actor"]["account"] == {"homePage": "https://lms.example.org", "name": row["learner_id"]}
        assert s["object"]["id"] == f"https://course.example.org/items/{row['item_id']}"
        assert s["object"]["definition"]["interactionType"] == "choice"
        assert s["timestamp"] == row["timestamp"].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert s["context"]["contextActivities"]["parent"][0]["id"].endswith("/pages/" + row["page"])
        assert s["context"]["contextActivities"]["grouping"][0]["id"].endswith("/modules/" + row["module"])
        assert s["context"]["extensions"][f"{ext}/attempt"] == row["attempt"]
        assert s["context"]["extensions"][f"{ext}/kc/Fine"]
        if row["outcome"] == "hint":
            assert s["verb"] == {"id": "http://adlnet.gov/expapi/verbs/asked", "display": {"en-US": "asked"}}
            assert "success" not in s["result"]
        else:
            assert s["verb"]["id"] == "http://adlnet.gov/expapi/verbs/answered"
            assert s["result"]["success"] is (row["outcome"] == "correct")
            assert s["result"]["response"] == row["response"]
        if pd.notna(row["duration_s"]):
            assert float(s["result"]["duration"][2:-1]) == pytest.approx(row["duration_s"])
    assert len({s["id"] for s in st}) == len(st)
    assert json.loads(exported["xapi_json"].read_text(encoding="utf-8")) == st


@pytest.mark.parametrize("table", ["assessments", "surveys", "learners", "items"])
def test_tabular_exports_map_back_to_the_canonical_table(small, exported, table):
    mapping = yaml.safe_load(exported[f"{table}_mapping"].read_text(encoding="utf-8"))
    assert mapping["table"] == table
    raw = pd.read_csv(exported[table], dtype=str, keep_default_na=False)
    assert not set(mapping["columns"].values()) & set(mapping["columns"])  # export-like names, not canonical ones
    out = pd.DataFrame({canon: raw[src] for canon, src in mapping["columns"].items()})
    for canon, vmap in (mapping.get("values") or {}).items():
        out[canon] = out[canon].map(lambda v, m=vmap: m.get(v, v))
    for canon, value in (mapping.get("constants") or {}).items():
        out[canon] = value
    want = small.tables[table]
    for col in out.columns:
        got, exp = out[col], want[col]
        if str(exp.dtype).startswith("datetime"):
            got = pd.to_datetime(got)
        elif exp.dtype == "float64" or str(exp.dtype) == "Int64":
            got = pd.to_numeric(got)
        elif str(exp.dtype) == "boolean":
            got = got.astype(bool)
        assert (got.to_numpy() == exp.to_numpy(dtype=object if str(exp.dtype) == "string" else None)).all(), col
    if table in ("assessments", "surveys"):
        assert "values" in mapping and "phase" in mapping["values"]


def test_write_rejects_unknown_format(small, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown export format.*'csv'.*valid: datashop, xapi, xapi-json"):
        small.write(tmp_path, formats=("csv",))


# ------------------------------------------------------------------ follow-up cohort and errors


def test_followup_fixes_the_listed_problems_only(big):
    nxt = simulate_followup(big, fixed=("too_easy", "miskeyed"), seed=2, n_learners=1500)
    assert nxt.cohort == "demo-2"
    assert not set(nxt.learners["learner_id"]) & set(big.learners["learner_id"])
    items = nxt.items.set_index("item_id")
    mk, te = _planted_item(big, "miskeyed"), _planted_item(big, "too_easy")
    assert items.loc[[mk, te], "version"].eq("v2").all()
    assert items.drop([mk, te])["version"].eq("v1").all()
    assert items.loc[mk, "answer_key"] == big.truth.items.set_index("item_id").loc[mk, "true_key"]
    planted = set(nxt.truth.items["planted"]) | set(nxt.truth.kcs["planted"]) | set(nxt.truth.pages["planted"])
    assert planted - {""} == set(PLANTED) - {"too_easy", "miskeyed"}
    assert _item_rest(nxt)[mk] > 0.1
    fac = _first(nxt).groupby("item_id")["correct"].mean()
    assert fac[te] < 0.93
    assert (nxt.attempts["course_version"] == "v2").all()
    third = simulate_followup(nxt, fixed=("no_learning",), seed=3, n_learners=50, cohort="demo-3")
    assert (third.truth.kcs["planted"] == "").all() and third.truth.kcs["gamma"].min() > 0
    assert third.learners["learner_id"].iloc[0] == "S03001"


def test_followup_rejects_unknown_or_absent_problems(big):
    with pytest.raises(ConfigError, match=r"unknown planted problem.*'typo'.*valid: too_easy, miskeyed"):
        simulate_followup(big, fixed=("typo",))
    clean = simulate_cohort(n_learners=20, planted=False)
    with pytest.raises(ConfigError, match=r"does not have.*planted problems: none"):
        simulate_followup(clean, fixed=("dif",))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"n_learners": 0}, r"n_learners must be an integer >= 1; got 0"),
        ({"seed": -1}, r"seed must be an integer >= 0; got -1"),
        ({"skip_rate": 1.5}, r"skip_rate must be a number in \[0, 1.0\); got 1.5"),
        ({"dif_variable": "shoe_size"}, r"'shoe_size' is not a learner attribute; valid: gender"),
        ({"pages_per_module": 1, "items_per_page": 6}, r"planted=True needs pages_per_module >= 2.*got pages_per_module=1"),
        ({"start": "not a date"}, r"start must be a date.*'not a date'"),
    ],
)
def test_bad_settings_raise_config_error(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        simulate_cohort(n_learners=kwargs.pop("n_learners", 10), **kwargs)


def test_unplanted_and_small_courses_work():
    sim = simulate_cohort(n_learners=30, planted=False, n_modules=1, pages_per_module=1, items_per_page=2, kcs_per_module=2)
    assert (sim.truth.items["planted"] == "").all() and (sim.truth.pages["planted"] == "").all()
    assert len(sim.items) == 2 + 2 * 2
    assert len(sim.attempts) > 0


@pytest.mark.slow
def test_speed_8000_learners_100_items():
    t0 = time.perf_counter()
    sim = simulate_cohort(n_learners=8000, n_modules=5, pages_per_module=4, items_per_page=3)
    elapsed = time.perf_counter() - t0
    assert len(sim.items) == 100
    assert len(sim.attempts) > 500_000
    assert elapsed < 60, f"simulating 8,000 learners x 100 items took {elapsed:.1f} s"


def test_an_export_is_joined_a_block_of_rows_at_a_time_with_the_same_lines():
    import pyarrow as pa

    from research.simulate.exports import _join, _join_rows

    cols = [pa.array([f"r{i}" for i in range(10)]), "x", pa.array([str(i * i) for i in range(10)])]
    whole = _join(cols, "\t").to_pylist()
    assert _join_rows(cols, 10, "\t", rows=3).to_pylist() == whole == [f"r{i}\tx\t{i * i}" for i in range(10)]
    assert _join_rows(cols, 0, "\t").to_pylist() == []
