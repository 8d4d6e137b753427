"""Privacy of the whole publication: no count below the minimum cell size can be worked out
by subtracting counts that the tables of one report folder publish (issue 13, item 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from research.paths import schema_dir
from research.privacy import (
    SUPPRESSED_CELLS,
    PrivacyError,
    audit_publication,
    count_declarations,
    protect_table,
    published_cells,
    read_table,
    require_safe_publication,
)

K = 10


# -- an independent checker: brute force over every pair and every disjoint family -------


def _within(outer, inner) -> bool:
    if outer[0] == "c":
        return inner == outer
    return inner[0] == "r" and outer[1] <= inner[1] and inner[2] <= outer[2]


def _subset(small: dict, big: dict) -> bool:
    """Every learner of the set ``small`` is in the set ``big``."""
    return all(d in small and _within(c, small[d]) for d, c in big.items())


def _disjoint(a, b) -> bool:
    if a[0] == "c":
        return a != b
    return a[2] < b[1] or b[2] < a[1]


def derivable_small_counts(folder: Path, k: int = K) -> list[str]:
    """Every count in (0, k) that the folder's tables give by subtraction, found by brute force.

    Independent of research.privacy.find_violations: every published count, every pair of
    counts whose learner sets are nested (within and across tables), and every family of
    pairwise disjoint counts inside a published total that differ from it in one dimension
    (all subfamilies, not only the maximal ones).
    """
    cells = published_cells(folder)
    facts: dict[tuple, str] = {}
    for c in cells:
        facts.setdefault((c.lits, c.value), c.label)
    items = [(dict(lits), value, label) for (lits, value), label in facts.items()]
    found = [f"{label} = {value:g}" for _, value, label in items if 0 < value < k]
    by_dims: dict[frozenset, list] = {}
    for it in items:
        by_dims.setdefault(frozenset(it[0]), []).append(it)
    for dims_a, group_a in by_dims.items():  # A can contain B only if B restricts every dimension A does
        for dims_b, group_b in by_dims.items():
            if not dims_a <= dims_b:
                continue
            for la, va, na in group_a:
                for lb, vb, nb in group_b:
                    if lb is la or not _subset(lb, la):
                        continue
                    if 0 < va - vb < k:
                        found.append(f"{na} - {nb}")
    parts_by: dict[tuple, list] = {}
    for lp, vp, n in items:
        for d in lp:
            parts_by.setdefault((frozenset((x, c) for x, c in lp.items() if x != d), d), []).append((lp, vp, n))
    for lt, vt, nt in items:
        keys = {(frozenset(lt.items()), d) for (b, d) in parts_by if d not in lt and b == frozenset(lt.items())}
        keys |= {(frozenset((x, c) for x, c in lt.items() if x != d), d) for d, c in lt.items() if c[0] == "r"}
        for base, d in keys:
            parts = [(lp, vp, n) for lp, vp, n in parts_by.get((base, d), ())
                     if lp != lt and (d not in lt or _within(lt[d], lp[d]))]

            def extend(start, chosen, rest):
                # every family of pairwise disjoint parts (each part once, in order): all subfamilies
                if len(chosen) >= 2 and 0 < rest < k:
                    found.append(f"{nt} - " + " - ".join(n for _, _, n in chosen))
                for i in range(start, len(parts)):
                    lp, vp, n = parts[i]
                    if rest - vp >= 0 and all(_disjoint(lp[d], c[0][d]) for c in chosen):
                        extend(i + 1, chosen + [parts[i]], rest - vp)

            extend(0, [], vt)
    return found


# -- hand-made tables ---------------------------------------------------------------------


def _items(n_learners):
    return pd.DataFrame({"item_id": [f"i{j}" for j in range(len(n_learners))], "n_learners": n_learners})


def _write(folder: Path, name: str, frame: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{name}.csv", index=False)


def _dif(rows):
    return pd.DataFrame(rows, columns=["item_id", "attribute", "reference_group", "focal_group", "n_reference", "n_focal"])


def test_hidden_gender_group_by_items_minus_dif_is_flagged_then_protected(tmp_path):
    """items.n_learners - dif.n_reference - dif.n_focal gave a hidden group of 3-8 on every item."""
    unsafe = tmp_path / "unsafe"
    _write(unsafe, "items", _items([399, 250]))
    dif = _dif([("i0", "gender", "female", "male", 247, 144), ("i1", "gender", "female", "male", 130, 120)])
    _write(unsafe, "dif", dif)  # negative control: written without protection
    found = audit_publication(unsafe, min_cell_size=K)
    assert found[["kind", "difference"]].values.tolist() == [["split", 8.0]]
    assert "items.n_learners[item_id=i0]" in found["relation"].iloc[0] and "dif.n_focal" in found["relation"].iloc[0]
    assert derivable_small_counts(unsafe) != []
    with pytest.raises(PrivacyError, match="1 group.*fewer than 10 learners.*items.n_learners") as err:
        require_safe_publication(unsafe, min_cell_size=K)
    assert "= 8" not in str(err.value) and " 8 " not in str(err.value)

    safe = tmp_path / "safe"
    _write(safe, "items", _items([399, 250]))
    items_before = (safe / "items.csv").read_bytes()
    protected = protect_table(dif, "dif", safe, min_cell_size=K)
    assert protected is dif  # in place: the notebook shows and plots what is published
    _write(safe, "dif", dif)
    assert (safe / "items.csv").read_bytes() == items_before  # a published table is never changed
    assert dif.loc[1, ["n_reference", "n_focal"]].tolist() == [130, 120]  # item i1 is safe: left alone
    assert dif.loc[0, ["n_reference", "n_focal"]].isna().sum() == 1
    assert audit_publication(safe, min_cell_size=K).empty and derivable_small_counts(safe) == []
    record = pd.read_csv(safe / SUPPRESSED_CELLS)
    assert record[["table", "row"]].values.tolist() == [["dif", 1]]
    assert record["reason"].iloc[0].startswith("hidden so that fewer than 10 learners cannot be worked out by subtraction")
    from research.schema import validate

    assert validate(record, "outputs/suppressed_cells").rejects.empty

    # the same table written again (a notebook re-run) replaces its record, it does not pile up
    again = _dif([("i0", "gender", "female", "male", 200, 150), ("i1", "gender", "female", "male", 130, 120)])
    protect_table(again, "dif", safe, min_cell_size=K)
    assert again.notna().all().all()  # 399 - 200 - 150 = 49: nothing to hide
    assert pd.read_csv(safe / SUPPRESSED_CELLS).empty


def _gains(rows):
    cols = ["instrument", "group_variable", "group", "n", "n_pre", "n_post", "n_pre_only", "n_post_only"]
    return pd.DataFrame(rows, columns=cols)


def test_pre_only_counts_that_attrition_hides_are_hidden_in_gains_too(tmp_path):
    attrition = pd.DataFrame({"instrument": ["t", "t"], "group_variable": ["all", "role"], "group": ["all", "chef"],
                              "n_pre": [400, 51], "n_completed": [378, np.nan], "n_dropped": [22, np.nan],
                              "n_post_only": [0, np.nan], "attrition_rate": [0.055, np.nan]})
    protect_table(attrition, "attrition", tmp_path, min_cell_size=K)
    _write(tmp_path, "attrition", attrition)
    gains = _gains([("t", "all", "all", 378, 400, 378, 22, 0), ("t", "role", "chef", 49, 51, 49, 2, 0)])
    protect_table(gains, "gains", tmp_path, min_cell_size=K)
    _write(tmp_path, "gains", gains)
    assert pd.isna(gains.loc[1, "n_pre_only"])  # a count of 2 learners, published directly
    # and n_pre - n = 2 as well: one of the two is hidden
    assert gains.loc[1, ["n", "n_pre"]].isna().sum() >= 1
    assert gains.loc[0].notna().all()
    assert audit_publication(tmp_path, min_cell_size=K).empty and derivable_small_counts(tmp_path) == []


def test_funnel_steps_keep_no_drop_below_the_minimum(tmp_path):
    reached = [399, 392, 386, 378, 375, 369, 363, 286, 281, 273, 271, 267]
    drop = [a - b for a, b in zip(reached, reached[1:])] + [0]
    funnel = pd.DataFrame({"position": range(1, 13), "level": "page", "reached": reached,
                           "share": np.array(reached) / 400, "drop": drop, "drop_share": np.array(drop) / 400,
                           "hazard": np.array(drop) / np.array(reached), "hazard_ci_low": 0.0, "hazard_ci_high": 0.1,
                           "n_cohort": 400})
    unsafe = tmp_path / "unsafe"
    _write(unsafe, "funnel", funnel)
    kinds = audit_publication(unsafe, min_cell_size=K)["kind"].value_counts()
    assert kinds["count"] == 10 and kinds["pair"] > 10  # drops of 2-8 and successive steps
    safe = tmp_path / "safe"
    protect_table(funnel, "funnel", safe, min_cell_size=K)
    _write(safe, "funnel", funnel)
    assert audit_publication(safe, min_cell_size=K).empty and derivable_small_counts(safe) == []
    shown = funnel["reached"].dropna().astype(int).tolist()
    assert all(a - b >= K or a == b for a, b in zip(shown, shown[1:]))
    assert funnel.loc[6, "drop"] == 77 and funnel.loc[6, "hazard"] > 0  # the big drop stays
    hidden = funnel["drop"].isna()
    assert funnel.loc[hidden, ["drop_share", "hazard"]].isna().all().all()  # the rates that give it back, too
    assert funnel["reached"].isna().equals(funnel["share"].isna() & funnel["reached"].isna())


def test_figures_draw_tables_with_hidden_counts(tmp_path):
    """The notebooks plot the protected tables: hidden (missing) counts draw nothing, never fail."""
    import matplotlib

    matplotlib.use("Agg")
    from research.plots import equity, ingest

    summary = pd.DataFrame({"level": ["cohort", "module", "module"], "key": ["c", "M1", "M2"],
                            "n_learners": pd.array([399, pd.NA, 378], dtype="Int64"),
                            "first_attempt_correct": [0.6, 0.5, 0.7]})
    fig, alt = ingest.attempts_by_module(summary)
    assert "M1: a hidden number of learners" in alt and "M2: 378 learners" in alt
    funnel = pd.DataFrame({"position": [1, 2, 3], "level": "page", "page": ["a", "b", "c"],
                           "reached": pd.array([399, pd.NA, 300], dtype="Int64"), "share": [np.nan, np.nan, np.nan],
                           "drop": pd.array([pd.NA, 80, 0], dtype="Int64"), "drop_share": [np.nan, 0.2, 0.0],
                           "hazard": [np.nan, 0.21, 0.0], "rank_of_drop": pd.array([2, 1, pd.NA], dtype="Int64"),
                           "n_cohort": pd.array([pd.NA] * 3, dtype="Int64")})
    fig, alt = equity.funnel_chart(funnel)
    assert "hidden number of learners" in alt and "nan" not in alt.lower()


@pytest.mark.parametrize("seed", range(12))
def test_random_group_tables_are_safe_after_protection(tmp_path, seed):
    """Random totals, groups of several attributes and items written in random order: never unsafe."""
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(2, 6))
    items = _items(rng.integers(5, 120, n_items).tolist())
    rows = []
    for i, n in enumerate(items["n_learners"]):
        for attribute, groups in (("gender", ["a", "b", "c"]), ("role", ["x", "y"])):
            sizes = rng.multinomial(n, rng.dirichlet(np.ones(len(groups)) * 0.7))
            for g, s in zip(groups[1:], sizes[1:]):
                rows.append((f"i{i}", attribute, groups[0], g, sizes[0], s))
    dif = _dif(rows)
    order = [("items", items), ("dif", dif)][:: 1 if seed % 2 else -1]
    for name, frame in order:
        protect_table(frame, name, tmp_path, min_cell_size=K)
        _write(tmp_path, name, frame)
    assert audit_publication(tmp_path, min_cell_size=K).empty
    assert derivable_small_counts(tmp_path) == []


def test_every_learner_count_of_every_output_is_declared():
    """A new learner-count column without a declaration would escape the publication check."""
    undeclared = []
    for path in sorted((schema_dir() / "outputs").glob("*.schema.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        declared = count_declarations(schema["name"])
        for f in schema["fields"]:
            text = f.get("description", "")
            if f["type"] == "integer" and text.split(" ")[0].endswith("earners") and f["name"] not in declared:
                undeclared.append(f"{schema['name']}.{f['name']}")
            for col in declared.get(f["name"], {}).get("hide_with", []):
                assert col in {g["name"] for g in schema["fields"]}, f"{schema['name']}.{f['name']} hides unknown {col}"
    # comparison: counts of two cohorts in mixed units (learners or student steps), checked in each cohort's own folder
    assert undeclared == []


# -- real runs: the demo cohort and a cohort with a 3-learner group -----------------------


def _cohort_with_tiny_group(folder: Path) -> dict:
    from research.simulate import simulate_cohort

    sim = simulate_cohort(n_learners=160, seed=11, cohort="tiny3")
    ids = sim.learners["learner_id"].iloc[:3]
    sim.learners.loc[sim.learners["learner_id"].isin(ids), "role"] = "chef"  # a role held by 3 learners
    return sim.write(folder, formats=("datashop",))


@pytest.fixture(scope="module")
def published_runs(tmp_path_factory):
    """A run of a cohort with a 3-learner role group (`research run --cohort tiny3`), then `research demo`
    (what `make demo` does) in the same project home: one demo run serves the privacy checks and the
    end-to-end check of the demo."""
    home = tmp_path_factory.mktemp("home")
    (home / "cohorts").mkdir()
    fast = {"run_bayes": False, "n_boot": 40}
    exports = _cohort_with_tiny_group(home / "exports")
    sources = [{"path": str(exports["datashop"])}] + [
        {"path": str(exports[name]), "mapping": str(exports[f"{name}_mapping"])}
        for name in ("assessments", "surveys", "learners", "items")
    ]
    (home / "cohorts" / "tiny3.yaml").write_text(
        json.dumps({"cohort": "tiny3", "sources": sources, "min_cell_size": K, "parameters": fast}), encoding="utf-8")
    env = {**os.environ, "RESEARCH_HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}
    research = [sys.executable, "-c", "import sys; from research.cli import main; sys.exit(main())"]
    runs = {}
    for cohort, args in (("tiny3", ["run", "--cohort", "tiny3"]), ("demo", ["demo"])):
        proc = subprocess.run([*research, *args], env=env, cwd=home, capture_output=True, text=True, timeout=900)
        assert proc.returncode in (0, 2), proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[cohort] = home / "reports" / cohort
    return runs


@pytest.mark.slow
def test_demo_runs_every_notebook_end_to_end(published_runs):
    """What `make demo` does (`research demo`), in a project home of its own: every scheduled notebook ran,
    each has its HTML, and no page loads anything from the network."""
    from research.pipeline import remote_references

    report = published_runs["demo"]
    manifest = json.loads((report / "manifest.json").read_text())
    assert manifest["outcome"] == "ok"
    ran = [n["notebook"] for n in manifest["notebooks"]]
    expected = [p.name for p in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
                if not p.name.startswith(("00_", "07_"))]
    assert ran == expected
    for nb in ran:
        assert (report / nb.replace(".ipynb", ".html")).is_file()
    assert (report / "ingest_summary.csv").is_file()
    assert (report.parent / "index.html").is_file()
    for page in report.parent.rglob("*.html"):  # self-contained: nothing loaded from the network
        assert not remote_references(page.read_text(encoding="utf-8")), page


@pytest.mark.slow
@pytest.mark.parametrize("cohort", ["demo", "tiny3"])
def test_no_small_count_is_derivable_anywhere_in_a_published_report(published_runs, cohort):
    folder = published_runs[cohort]
    tables = sorted(p.stem for p in folder.glob("*.csv") if count_declarations(p.stem))
    assert {"items", "dif", "gains", "attrition", "funnel", "learning_curves"} <= set(tables)
    assert len(published_cells(folder)) > 500
    assert derivable_small_counts(folder) == []
    assert audit_publication(folder, min_cell_size=K).empty
    record = pd.read_csv(folder / SUPPRESSED_CELLS)
    assert len(record) and record["reason"].notna().all()
    # the figures are drawn from the protected tables: the funnel's shown counts are the CSV's
    funnel = read_table(folder / "funnel.csv")
    assert (folder / "figures" / "funnel.png").is_file()
    assert funnel["reached"].isna().any() or funnel["drop"].isna().any()

    # negative control: one unprotected table dropped into a copy of the folder is found
    copy = folder.parent / f"{cohort}-unsafe"
    shutil.copytree(folder, copy, dirs_exist_ok=True)
    items = read_table(copy / "items.csv")
    shown = items[items["n_learners"].notna()].index[0]
    n = int(items.loc[shown, "n_learners"])
    dif = _dif([(items.loc[shown, "item_id"], "region", "Here", "There", n - 13, 10)])  # 3 learners left over
    dif.to_csv(copy / "dif.csv", index=False)
    assert any(f.startswith(("items.n_learners", "ingest_summary.n_learners")) and "dif.n_focal" in f
               for f in derivable_small_counts(copy))
    with pytest.raises(PrivacyError):
        require_safe_publication(copy, min_cell_size=K)


@pytest.mark.slow
def test_the_three_learner_group_is_hidden_everywhere(published_runs):
    folder = published_runs["tiny3"]
    for name in ("gains", "attrition", "gaps"):
        table = read_table(folder / f"{name}.csv")
        chef = table[table["group"] == "chef"]
        assert len(chef), name
        counts = [c for c in count_declarations(name) if c in chef]
        assert chef[counts].isna().all().all(), name
    dif = read_table(folder / "dif.csv")
    assert dif.loc[dif["focal_group"] == "chef", ["n_focal"]].isna().all().all()


def test_report_group_sizes_are_checked_against_the_other_tables(tmp_path):
    """250 women enrolled and 247 women with a pre-test in gains.csv: 3 women without one."""
    gains = _gains([("t", "all", "all", 380, 400, 380, 20, 0), ("t", "gender", "woman", 230, 247, 230, 17, 0),
                    ("t", "gender", "man", 140, 153, 140, 13, 0)])
    protect_table(gains, "gains", tmp_path, min_cell_size=K)
    _write(tmp_path, "gains", gains)
    learners = pd.DataFrame({"learner_id": [f"p_{i:016x}" for i in range(420)],
                             "gender": ["woman"] * 250 + ["man"] * 170})
    from research.privacy import group_sizes

    plain = group_sizes(learners, ["gender"], min_cell_size=K)
    assert plain["n"].notna().all()  # within the attribute alone nothing is small
    sizes = group_sizes(learners, ["gender"], min_cell_size=K, out_dir=tmp_path)
    assert sizes.set_index("group").loc["woman", ["n", "share"]].isna().all()
    assert sizes.set_index("group").loc["man", "n"] == 170
    assert (tmp_path / "group_sizes.csv").is_file()
    assert audit_publication(tmp_path, min_cell_size=K).empty and derivable_small_counts(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("cohort", ["demo", "tiny3"])
def test_the_published_report_is_a_valid_frictionless_data_package(published_runs, cohort):
    frictionless = pytest.importorskip("frictionless")
    folder = published_runs[cohort]
    package = json.loads((folder / "datapackage.json").read_text())
    assert {r["path"] for r in package["resources"]} == {p.name for p in folder.glob("*.csv")}
    report = frictionless.validate(str(folder / "datapackage.json"))
    assert report.valid, [f"{t.name}: {e.message}" for t in report.tasks for e in t.errors][:20]


SUPPRESS_IN_A_FRESH_PROCESS = """
import hashlib, sys, tempfile
from pathlib import Path
from research.estimates import build_estimates
from research.simulate import simulate_cohort
with tempfile.TemporaryDirectory() as d:
    build_estimates(simulate_cohort(n_learners=40, seed=4).tables, out_dir=d, tables=["learning_curves"])
    print(hashlib.sha256((Path(d) / "suppressed_cells.csv").read_bytes()).hexdigest())
"""


def test_the_same_cells_are_hidden_whatever_the_hash_seed():
    """Suppression breaks ties in the order of the cells, never in the order of a set (hash-seeded per process)."""
    digests = set()
    for seed in ("0", "1"):
        proc = subprocess.run([sys.executable, "-c", SUPPRESS_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        digests.add(proc.stdout.strip())
    assert len(digests) == 1, digests
