"""Each report folder carries a datapackage.json that Frictionless accepts; so does data_schema/."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from test_recommend import all_estimates

from research.recommend import recommend
from research.report import write_report
from research.report.datapackage import write_datapackage

frictionless = pytest.importorskip("frictionless")
ROOT = Path(__file__).resolve().parents[1]


def _errors(descriptor: Path) -> list[str]:
    report = frictionless.validate(str(descriptor))
    return [f"{task.name}: {e.message}" for task in report.tasks for e in task.errors] + [e.message for e in report.errors]


def test_the_canonical_datapackage_is_valid():
    assert _errors(ROOT / "data_schema" / "datapackage.json") == []


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory) -> Path:
    estimates = all_estimates()
    out = tmp_path_factory.mktemp("reports") / "c1"
    out.mkdir()
    (out / "notes.csv").write_text("a,b\n1,x\n", encoding="utf-8")  # a table without a published schema
    write_report(recommend(estimates, cohort="c1", n_learners=400), out, language="en", generated=dt.date(2025, 3, 5))
    return out


def test_a_report_folder_describes_its_csvs_with_their_schemas(report_folder):
    package = json.loads((report_folder / "datapackage.json").read_text())
    described = {r["path"] for r in package["resources"]}
    assert described == {p.name for p in report_folder.glob("*.csv")}
    assert "recommendations.csv" in described
    recs = next(r for r in package["resources"] if r["path"] == "recommendations.csv")
    assert "recommendation_id" in {f["name"] for f in recs["schema"]["fields"]}
    notes = next(r for r in package["resources"] if r["path"] == "notes.csv")
    assert "No published Table Schema" in notes["description"]
    assert _errors(report_folder / "datapackage.json") == []


def test_frictionless_finds_a_table_that_breaks_its_schema(report_folder, tmp_path):
    import shutil

    copy = shutil.copytree(report_folder, tmp_path / "copy")
    lines = (copy / "recommendations.csv").read_text(encoding="utf-8").splitlines()
    (copy / "recommendations.csv").write_text("\n".join([lines[0] + ",extra"] + lines[1:]) + "\n", encoding="utf-8")
    write_datapackage(copy)
    package = json.loads((copy / "datapackage.json").read_text())
    package["resources"] = [r for r in package["resources"] if r["path"] == "recommendations.csv"]
    (copy / "datapackage.json").write_text(json.dumps(package), encoding="utf-8")
    assert _errors(copy / "datapackage.json")
