"""Every cohort runs to a report: real papermill runs through the `research` command.

- Every real dataset in ../shared/data: tests/test_real_cohorts.py (these helpers).
- Simulated cohorts of 3 and 25 learners run in the default suite; 60, 400 and 8,000 learners
  are marked slow (8,000 takes minutes on a laptop: the size the design promises).

Each run must exit 0, write the report in its language and the record of analyses, and the
notebooks and the report must say which analyses were skipped and why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import PROJECT_ROOT

RESEARCH = [sys.executable, "-m", "research.cli"]

NOTEBOOKS = ("01_ingest_and_validate", "02_item_analysis", "03_learning_curves", "04_learning_gains",
             "05_equity_and_engagement", "06_recommendations")


def _env(home: Path) -> dict:
    env = dict(os.environ)
    env["RESEARCH_HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT / "src"), str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("RESEARCH_PSEUDONYM_KEY", "test-key-not-secret")
    return env


def _research(home: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*RESEARCH, *map(str, args)], cwd=home, env=_env(home), capture_output=True, text=True,
                          timeout=timeout)


def _config(folder: Path, cohort: str, language: str = "en", **parameters) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"cohort": cohort, "language": language, "parameters": parameters}
    (folder / f"{cohort}.yaml").write_text(json.dumps(doc), encoding="utf-8")  # JSON is YAML


def _summary(report: Path) -> dict:
    analyses = pd.read_csv(report / "analyses.csv", dtype=str, keep_default_na=False)
    recs = pd.read_csv(report / "recommendations.csv") if (report / "recommendations.csv").is_file() else pd.DataFrame()
    manifest = json.loads((report / "manifest.json").read_text())
    return {
        "notebooks": [n["notebook"] for n in manifest["notebooks"] if n["outcome"] == "ok"],
        "seconds": {n["notebook"][:2]: round(n["seconds"], 1) for n in manifest["notebooks"]},
        "skipped": sorted(analyses.loc[analyses["status"] == "skipped", "analysis"]),
        "adapted": sorted(analyses.loc[analyses["status"] == "adapted", "analysis"]),
        "findings": len(recs),
        "analyses": analyses,
    }


def _run_and_check(home: Path, cohort: str, warehouse: Path, config_dir: Path, language: str = "en") -> dict:
    run = _research(home, "run", "--cohort", cohort, "--warehouse", warehouse, "--out", home / "reports",
                    "--config-dir", config_dir)
    assert run.returncode == 0, f"{cohort}: exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr
    report = home / "reports" / cohort
    assert (report / f"report.{language}.html").is_file()
    summary = _summary(report)
    assert summary["notebooks"] == [f"{n}.ipynb" for n in NOTEBOOKS]
    return summary


# ------------------------------------------------------------------ simulated sizes


def _simulated_run(home: Path, n: int, *, language: str = "en") -> tuple[dict, Path]:
    from research.simulate import simulate_cohort

    cohort = f"sim-{n}"
    sim = simulate_cohort(n_learners=n, seed=n, cohort=cohort)
    written = sim.write(home / "exports" / cohort, formats=("datashop",))
    warehouse = home / "warehouse.duckdb"
    files = [written[k] for k in ("datashop", "assessments", "surveys", "learners", "items")]
    done = _research(home, "ingest", *files, "--cohort", cohort, "--warehouse", warehouse)
    assert done.returncode in (0, 2), done.stdout + done.stderr
    _config(home / "cohorts", cohort, language=language, run_bayes=False, n_boot=100)
    return _run_and_check(home, cohort, warehouse, home / "cohorts", language=language), home / "reports" / cohort


@pytest.fixture(scope="module")
def sim_home(tmp_path_factory):
    return tmp_path_factory.mktemp("sim_home")


def test_a_cohort_of_3_learners_runs_and_says_why_the_models_were_skipped_in_swedish(sim_home):
    summary, report = _simulated_run(sim_home, 3, language="sv")
    a = summary["analyses"].set_index("analysis")
    assert a.loc["irt", "message"] == "Rasch and 2PL models: 3 learners; this needs 30 per item: set min_n to go lower"
    assert a.loc["item_statistics", "status"] == "adapted"
    assert {"irt", "dif", "learning_curves"} <= set(summary["skipped"])
    html = (report / "report.sv.html").read_text()
    assert "Vad som inte analyserades, och varför" in html
    assert "Rasch- och 2PL-modeller: 3 deltagare; det krävs 30 per uppgift: sänk min_n för att gå lägre." in html
    nb = (report / "02_item_analysis.html").read_text()
    assert "3 learners; this needs 30 per item: set min_n to go lower" in nb


def test_a_cohort_of_25_learners_runs_with_item_tables_flagged_low_n(sim_home):
    summary, report = _simulated_run(sim_home, 25)
    items = pd.read_csv(report / "items.csv")
    assert len(items) > 0 and items["low_n"].all()
    a = summary["analyses"].set_index("analysis")
    assert a.loc["irt", "reason"] == "too_few_learners"
    html = (report / "report.en.html").read_text()
    assert "Rasch and 2PL models: 25 learners; this needs 30 per item: set min_n to go lower." in html


@pytest.mark.slow
@pytest.mark.parametrize("n", [60, 400])
def test_mid_sized_cohorts_run_every_analysis(sim_home, n):
    summary, report = _simulated_run(sim_home, n)
    assert {"item_statistics", "irt", "kc_models", "learning_curves", "mastery", "student_models", "gains", "surveys",
            "funnel"} <= set(summary["analyses"].query("status == 'ran'")["analysis"])
    assert summary["findings"] > 0
    # knowledge tracing per KC of the best KC model, and the student models compared on held-out learners
    mastery = pd.read_csv(report / "mastery.csv")
    assert (mastery["status"] == "fit").sum() >= 5 and mastery["kc_model"].nunique() == 1
    models = pd.read_csv(report / "student_models.csv")
    assert set(models["model"]) == {"rasch", "afm", "pfa", "best_lr", "bkt"} and models["auc"].between(0.5, 1).all()


@pytest.mark.slow
def test_a_cohort_of_8000_learners_runs_to_a_report(sim_home):
    summary, _report = _simulated_run(sim_home, 8000)
    assert "irt" not in summary["skipped"] and summary["findings"] > 0
