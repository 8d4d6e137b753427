"""The papermill runner: real notebook runs, the lock, swap-in on success, --changed, manifests.

These use small real notebooks written into a temporary folder so the runner's
guarantees are tested in seconds; the full notebooks run under nbval and in
tests/test_cli.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from research.cohort_config import CohortConfig, Source
from research.pipeline import EXIT_CODES, run_cohort
from research.simulate import simulate_cohort
from research.warehouse import Warehouse

PARAMS = 'cohort = "x"\nwarehouse = "data/warehouse.duckdb"\nout_dir = "reports/x"\nmin_cell_size = 10'


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(PARAMS)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first] + [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


OK_CELL = """
    import pathlib
    import research.notebook
    ctx = research.notebook.setup(cohort=cohort, warehouse=warehouse, out_dir=out_dir, min_cell_size=min_cell_size)
    pathlib.Path(out_dir, "learners.txt").write_text(str(ctx.data.attempts["learner_id"].nunique()))
"""


@pytest.fixture(scope="module")
def cohort_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    sim = simulate_cohort(n_learners=30, seed=5, cohort="tiny")
    written = sim.write(folder, formats=("datashop",))
    return written


@pytest.fixture
def setup_run(tmp_path, cohort_files):
    wh = tmp_path / "w.duckdb"
    config = CohortConfig(cohort="tiny", sources=[Source(Path(cohort_files["datashop"]))], warehouse=wh)
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    return wh, tmp_path / "reports", config, nbs


def test_a_run_writes_html_index_and_a_manifest_whose_hashes_match_the_inputs(setup_run, cohort_files):
    wh, reports, config, nbs = setup_run
    nb = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    result = run_cohort("tiny", reports=reports, config=config, notebooks=[nb])
    assert result.status == "ok", result.message
    folder = reports / "tiny"
    assert (folder / "01_ok.html").is_file() and (folder / "index.html").is_file()
    assert int((folder / "learners.txt").read_text()) > 0
    html = (folder / "01_ok.html").read_text()
    assert "research.notebook.setup" not in html  # code cells are not exported
    manifest = json.loads((folder / "manifest.json").read_text())
    raw = Path(cohort_files["datashop"])
    assert manifest["inputs"][0]["sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert manifest["inputs"][0]["file"] == raw.name
    assert manifest["warehouse"]["row_counts"]["attempts"] > 0
    assert manifest["notebooks"][0]["parameters"]["cohort"] == "tiny"
    assert manifest["notebooks"][0]["outcome"] == "ok" and manifest["outcome"] == "ok"
    assert manifest["environment"]["libraries"]["pymc"]
    assert (reports / "index.html").is_file() and "tiny" in (reports / "index.html").read_text()


def test_changed_only_skips_unchanged_and_reruns_after_a_change(setup_run, cohort_files, tmp_path):
    wh, reports, config, nbs = setup_run
    nb = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    first = run_cohort("tiny", reports=reports, config=config, notebooks=[nb], changed_only=True)
    assert first.status == "ok"
    second = run_cohort("tiny", reports=reports, config=config, notebooks=[nb], changed_only=True)
    assert second.status == "skipped-unchanged"
    # a new input file for the cohort triggers a re-run
    extra = simulate_cohort(n_learners=5, seed=99, cohort="tiny").write(tmp_path / "more", formats=("datashop",))
    config.sources.append(Source(Path(extra["datashop"])))
    third = run_cohort("tiny", reports=reports, config=config, notebooks=[nb], changed_only=True)
    assert third.status == "ok"
    assert len(third.manifest["inputs"]) == 2
    # so does a changed notebook
    _notebook(nb, OK_CELL, "1 + 1")
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[nb], changed_only=True).status == "ok"
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[nb], changed_only=True).status == "skipped-unchanged"


def test_a_failing_notebook_names_cohort_notebook_cell_and_message_and_keeps_the_last_report(setup_run):
    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[ok]).status == "ok"
    before = (reports / "tiny" / "manifest.json").read_text()
    bad = _notebook(nbs / "02_bad.ipynb", "x = 1", "raise ValueError('planted failure')")
    result = run_cohort("tiny", reports=reports, config=config, notebooks=[ok, bad])
    assert result.status == "failed" and result.exit_code == 3
    assert "'tiny'" in result.message and "02_bad.ipynb" in result.message
    assert "cell 3" in result.message and "ValueError: planted failure" in result.message
    assert (reports / "tiny" / "manifest.json").read_text() == before
    kept = result.report_dir / "02_bad.ipynb"
    assert kept.is_file() and "planted failure" in kept.read_text()


def test_a_notebook_past_its_time_limit_is_stopped(setup_run):
    wh, reports, config, nbs = setup_run
    slow = _notebook(nbs / "01_slow.ipynb", "import time\ntime.sleep(120)")
    t0 = time.perf_counter()
    result = run_cohort("tiny", reports=reports, config=config, notebooks=[slow], timeout_s=8)
    assert time.perf_counter() - t0 < 60
    assert result.exit_code == 3 and "time limit of 8 s" in result.message
    assert not (reports / "tiny").exists()


RUNNER = """
import sys
from pathlib import Path
from research.cohort_config import CohortConfig, Source
from research.pipeline import run_cohort
cfg = CohortConfig(cohort="tiny", sources=[Source(Path(sys.argv[1]))], warehouse=Path(sys.argv[2]))
r = run_cohort("tiny", reports=sys.argv[3], config=cfg, notebooks=[Path(p) for p in sys.argv[4:]])
print(r.status, r.message)
sys.exit(r.exit_code)
"""


def _start(cohort_files, wh, reports, *nbs):
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(cohort_files["datashop"]), str(wh), str(reports), *map(str, nbs)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def test_a_killed_run_leaves_the_previous_report_intact(setup_run, cohort_files):
    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[ok]).status == "ok"
    before = {p.name: p.read_bytes() for p in (reports / "tiny").iterdir()}
    slow = _notebook(nbs / "02_slow.ipynb", "import time\ntime.sleep(120)")
    proc = _start(cohort_files, wh, reports, ok, slow)
    deadline = time.time() + 90
    while time.time() < deadline and not list(reports.glob(".tiny.run-*/01_ok.html")):
        time.sleep(0.5)
    assert list(reports.glob(".tiny.run-*/01_ok.html")), "the run did not get going"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert {p.name: p.read_bytes() for p in (reports / "tiny").iterdir()} == before
    # the lock died with the process: the next run goes ahead
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[ok]).status == "ok"


def test_two_concurrent_runs_never_write_the_same_cohort_at_once(setup_run, cohort_files):
    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    slowish = _notebook(nbs / "02_wait.ipynb", "import time\ntime.sleep(6)")
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[ok]).status == "ok"  # warehouse loaded
    a = _start(cohort_files, wh, reports, ok, slowish)
    time.sleep(1.0)
    b = _start(cohort_files, wh, reports, ok, slowish)
    out_a, out_b = a.communicate(timeout=180)[0], b.communicate(timeout=180)[0]
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 4], (out_a, out_b)
    assert "being run by another process" in (out_a + out_b)
    manifest = json.loads((reports / "tiny" / "manifest.json").read_text())
    assert manifest["outcome"] == "ok" and [n["notebook"] for n in manifest["notebooks"]] == ["01_ok.ipynb", "02_wait.ipynb"]


def test_exit_codes_are_documented():
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "exit code" in readme.lower()


def test_unknown_notebook_parameter_in_the_configuration_is_refused(setup_run):
    from research.errors import ConfigError

    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    config.parameters = {"bayesain": True}
    with pytest.raises(ConfigError, match="bayesain.*declared parameters: cohort, min_cell_size, out_dir, warehouse"):
        run_cohort("tiny", reports=reports, config=config, notebooks=[ok])


def test_ingest_counts_in_the_warehouse_match_the_manifest(setup_run):
    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    result = run_cohort("tiny", reports=reports, config=config, notebooks=[ok])
    with Warehouse(wh, read_only=True) as w:
        assert result.manifest["warehouse"]["row_counts"] == w.counts("tiny")


def test_one_failing_cohort_does_not_stop_the_others(setup_run, tmp_path):
    from research.pipeline import run_all

    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    broken = CohortConfig(cohort="broken", sources=[Source(tmp_path / "missing.txt")], warehouse=wh)
    results = run_all([broken, config], reports=reports, notebooks=[ok])
    by = {r.cohort: r for r in results}
    assert by["broken"].exit_code == 1 and "missing.txt" in by["broken"].message
    assert by["tiny"].status == "ok"
