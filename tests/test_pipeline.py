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


RUN_COHORT = """
import sys
from pathlib import Path
from research.cohort_config import CohortConfig, Source
from research.pipeline import run_one
name = sys.argv[1]
cfg = CohortConfig(cohort=name, sources=[Source(Path(sys.argv[2]))], warehouse=Path(sys.argv[3]))
r = run_one(name, reports=sys.argv[4], config=cfg, notebooks=[Path(p) for p in sys.argv[5:]])
print(r.status, r.message)
sys.exit(r.exit_code)
"""


def test_three_cohorts_run_at_the_same_time_into_one_warehouse_and_one_index(setup_run, cohort_files):
    """Three `run` processes of three cohorts started together: each ingests its sources (the warehouse
    writer waits its turn), runs its notebook and adds itself to the shared index and history."""
    wh, reports, _config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    names = ["c-one", "c-two", "c-three"]
    env = os.environ | {"RESEARCH_WAREHOUSE_WAIT": "120"}
    procs = [subprocess.Popen([sys.executable, "-c", RUN_COHORT, name, str(cohort_files["datashop"]), str(wh), str(reports), str(ok)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for name in names]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    with Warehouse(wh, read_only=True) as w:
        counts = {c: w.counts(c)["attempts"] for c in names}
    assert len(set(counts.values())) == 1 and min(counts.values()) > 0, counts  # the same export, whole, three times
    for name in names:
        assert json.loads((reports / name / "manifest.json").read_text())["outcome"] == "ok"
        assert (reports / name / "learners.txt").read_text() == "30"
    history = [json.loads(line) for line in (reports / "runs.jsonl").read_text().splitlines()]
    assert sorted(h["cohort"] for h in history) == sorted(names) and all(h["outcome"] == "ok" for h in history)
    index = (reports / "index.html").read_text(encoding="utf-8")
    assert all(f'href="{name}/' in index for name in names), index[:2000]


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


# -- operations: failures in the index, killed runs, names, history, faults (issue 12.6, 13.1, 13.6, 13.7) --------

def _history(reports: Path) -> list[dict]:
    rows = []
    for line in (reports / "runs.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def test_a_failed_cohort_is_in_the_index_with_its_reason_and_no_report_is_claimed(setup_run):
    wh, reports, config, nbs = setup_run
    bad = _notebook(nbs / "01_bad.ipynb", "raise RuntimeError('planted <b>failure</b>')")
    result = run_cohort("tiny", reports=reports, config=config, notebooks=[bad])
    assert result.status == "failed"
    assert "no earlier report of this cohort" in result.message and "last good report" not in result.message
    index = (reports / "index.html").read_text()
    assert "Cohorts whose latest run did not succeed" in index
    assert "planted &lt;b&gt;failure&lt;/b&gt;" in index and "<b>failure</b>" not in index
    assert "none yet" in index
    row = _history(reports)[-1]
    assert row["outcome"] == "failed" and row["cohort"] == "tiny" and "planted" in row["reason"]
    # after a good run the cohort leaves the failures table; a later failure names the real last report
    ok = _notebook(nbs / "02_ok.ipynb", OK_CELL)
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[ok]).status == "ok"
    assert "did not succeed" not in (reports / "index.html").read_text()
    again = run_cohort("tiny", reports=reports, config=config, notebooks=[ok, bad])
    assert "the last good report in" in again.message and str(reports / "tiny") in again.message
    assert 'href="tiny/index.html"' in (reports / "index.html").read_text()


def test_failed_folders_are_pruned_to_the_newest_few(setup_run):
    wh, reports, config, nbs = setup_run
    bad = _notebook(nbs / "01_bad.ipynb", "raise RuntimeError('x')")
    config.keep_failed = 1
    names = []
    for _ in range(3):
        names.append(run_cohort("tiny", reports=reports, config=config, notebooks=[bad]).report_dir.name)
    left = sorted(p.name for p in reports.glob(".tiny.failed-*"))
    assert left == names[-1:]
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[bad], keep_failed=0).status == "failed"
    assert not list(reports.glob(".tiny.failed-*"))


def test_a_torn_last_line_of_the_history_does_not_stop_later_runs_updating_the_index(setup_run):
    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    first = run_cohort("tiny", reports=reports, config=config, notebooks=[ok])
    history = reports / "runs.jsonl"
    data = history.read_bytes()
    history.write_bytes(data + data[: len(data) // 2])  # a kill or a full disk tore the next append
    second = run_cohort("tiny", reports=reports, config=config, notebooks=[ok])
    assert second.status == "ok" and second.exit_code == 0
    assert second.manifest["finished"] in (reports / "index.html").read_text()
    ids = [r["run_id"] for r in _history(reports)]
    assert first.manifest["run_id"] in ids and second.manifest["run_id"] in ids


def test_language_option_overrides_the_cohort_file(setup_run):
    wh, reports, config, nbs = setup_run
    nb = _notebook(nbs / "01_lang.ipynb", "import pathlib\npathlib.Path(out_dir, 'lang.txt').write_text(language)")
    cells = nbformat.read(nb, as_version=4)
    cells.cells[0].source += '\nlanguage = "en"'
    nbformat.write(cells, nb)
    config.language = "da"
    result = run_cohort("tiny", reports=reports, config=config, notebooks=[nb], language="sv")
    assert result.status == "ok" and (reports / "tiny" / "lang.txt").read_text() == "sv"
    assert result.manifest["language"] == "sv"
    from research.errors import ConfigError

    with pytest.raises(ConfigError, match="language 'fi' is not supported; use one of sv, da, en"):
        run_cohort("tiny", reports=reports, config=config, notebooks=[nb], language="fi")


def test_a_hostile_cohort_name_is_refused_before_anything_is_written(tmp_path):
    from research.cli import main

    victim = tmp_path / "somewhere"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "RESEARCH_HOME": str(home)}
    for name in ("../somewhere", "../../somewhere", str(victim), "demo/", "x" * 300, "javascript:alert(1)", "..", "a\tb"):
        proc = subprocess.run([sys.executable, "-m", "research.cli", "run", "--cohort", name, "--out", str(home / "reports")],
                              capture_output=True, text=True, cwd=home, env=env, timeout=120)
        assert proc.returncode == 1, (name, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: --cohort"), proc.stderr
    assert main(["run", "--cohort", "a\x00b", "--out", str(home / "reports")]) == 1  # NUL cannot travel in argv
    assert [p.name for p in victim.iterdir()] == ["precious.txt"] and (victim / "precious.txt").read_text() == "keep me"
    assert not (home / "reports").exists()


def test_names_differing_only_by_case_share_one_lock_and_folder(setup_run):
    from research.errors import ConfigError

    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[ok]).status == "ok"
    with pytest.raises(ConfigError, match="differs only by case from cohort 'tiny'"):
        run_cohort("TINY", reports=reports, config=config, notebooks=[ok])
    assert not list(reports.glob(".TINY*"))


def test_a_javascript_cohort_name_never_becomes_a_live_link(tmp_path):
    from research.report_index import record_run

    # names are refused at the door; an old history line with one is still only text, and its link is encoded
    record_run(tmp_path, {"cohort": "javascript:alert(1)", "run_id": "r1", "finished": "2026-01-01", "outcome": "failed",
                          "reason": "<img src=x onerror=alert(1)>"})
    html = (tmp_path / "index.html").read_text()
    assert 'href="javascript' not in html and "<img src=x" not in html


def test_an_unexpected_error_in_one_cohort_is_logged_not_printed_and_the_others_run(setup_run, monkeypatch, tmp_path):
    import research.pipeline as pipeline
    from research.pipeline import run_all

    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    real = pipeline.input_files

    def flaky(cohort, warehouse):
        if cohort == "other":
            raise TypeError("planted bug")
        return real(cohort, warehouse)

    monkeypatch.setattr(pipeline, "input_files", flaky)
    other = CohortConfig(cohort="other", sources=config.sources, warehouse=wh)
    results = {r.cohort: r for r in run_all([other, config], reports=reports, notebooks=[ok], changed_only=False)}
    assert results["tiny"].status == "ok"
    bad = results["other"]
    assert bad.exit_code == 3 and "TypeError: planted bug" in bad.message and "error.log" in bad.message
    logs = list(reports.glob(".other.failed-*/error.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text() and "planted bug" in logs[0].read_text()
    assert "Traceback" not in bad.message
    assert "planted bug" in (reports / "index.html").read_text()


DISK_FULL = """
import errno, sys
from pathlib import Path
import research.report_index as ri
def boom(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device", "index.html")
ri.write_cohort_index = boom
from research.cohort_config import load_config
from research.cli import _print_results
from research.pipeline import run_one
cfg = load_config(sys.argv[1])
sys.exit(_print_results([run_one("tiny", config=cfg, reports=sys.argv[2], notebooks=[Path(sys.argv[3])])], False))
"""


def test_a_full_disk_gives_a_clear_message_and_keeps_the_previous_report(setup_run, cohort_files, tmp_path):
    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[ok]).status == "ok"
    before = {p.name: p.read_bytes() for p in (reports / "tiny").iterdir()}
    cohorts = tmp_path / "cohorts"
    cohorts.mkdir()
    (cohorts / "tiny.yaml").write_text(f"sources: [{json.dumps(str(cohort_files['datashop']))}]\nwarehouse: {json.dumps(str(wh))}\n")
    proc = subprocess.run([sys.executable, "-c", DISK_FULL, str(cohorts / "tiny.yaml"), str(reports), str(ok)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "the disk is full" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert "the last good report in" in proc.stderr and "is unchanged" in proc.stderr
    assert {p.name: p.read_bytes() for p in (reports / "tiny").iterdir()} == before
    assert not list(reports.glob(".tiny.run-*"))


def test_a_killed_run_leaves_no_process_and_the_next_run_closes_its_folder(setup_run, cohort_files):
    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    pids = _notebook(nbs / "02_pids.ipynb",
                     "import os, pathlib, time\npathlib.Path(out_dir, 'pids.txt').write_text(f'{os.getpid()} {os.getppid()}')\ntime.sleep(300)")
    proc = _start(cohort_files, wh, reports, ok, pids)
    deadline = time.time() + 120
    while time.time() < deadline and not list(reports.glob(".tiny.run-*/pids.txt")):
        time.sleep(0.5)
    found = list(reports.glob(".tiny.run-*/pids.txt"))
    assert found, "the run did not get going"
    kernel, papermill = map(int, found[0].read_text().split())
    os.kill(proc.pid, signal.SIGKILL)  # the research process only, as the OOM killer or `kill -9` would
    proc.wait()

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{pid}/stat")
        return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))

    deadline = time.time() + 30
    while time.time() < deadline and (alive(kernel) or alive(papermill)):
        time.sleep(0.5)
    assert not alive(papermill), "papermill outlived the killed run"
    assert not alive(kernel), "the notebook kernel outlived the killed run"
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[ok]).status == "ok"
    assert not list(reports.glob(".tiny.run-*"))
    assert any(r["outcome"] == "killed" for r in _history(reports))
    assert len(list(reports.glob(".tiny.failed-*/pids.txt"))) == 1


REMOTE = ("<script src=", "<link", "<img", "<iframe")


def test_notebook_html_loads_nothing_from_the_network(setup_run):
    import re

    from research.pipeline import remote_references

    wh, reports, config, nbs = setup_run
    nb = _notebook(nbs / "01_rich.ipynb", OK_CELL,
                   "from IPython.display import HTML, Markdown\n"
                   "HTML('<img src=\"https://example.org/x.png\"><script src=\"//cdn.example.org/x.js\"></script>"
                   "<iframe src=\"http://example.org\"></iframe><link rel=stylesheet href=\"https://example.org/x.css\">')",
                   "Markdown('$e^{i\\\\pi}+1=0$ and ```mermaid\\ngraph TD; A-->B\\n```')")
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[nb]).status == "ok"
    pages = list(reports.rglob("*.html"))
    assert len(pages) >= 3
    remote = re.compile(r"""<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*["']?\s*(https?:)?//""", re.I)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not remote.search(text), (page, remote.search(text).group(0))
        assert not remote_references(text), page
        assert not re.search(r"""import[^;]*["']https?://""", text), page


def test_broken_cohort_files_never_stop_the_others_and_are_listed_with_their_reason(setup_run, cohort_files, tmp_path):
    from research.cohort_config import find_config, load_all
    from research.pipeline import run_all

    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    folder = tmp_path / "cohorts"
    folder.mkdir()
    src = json.dumps(str(cohort_files["datashop"]))
    (folder / "tiny.yaml").write_text(f"sources: [{src}]\nwarehouse: {json.dumps(str(wh))}\n")
    (folder / "broken.yaml").write_text("sources: [unclosed\n")
    (folder / "typo.yaml").write_text("langauge: sv\n")
    (folder / "evil.yaml").write_text("cohort: ../../outside\n")
    (folder / "twin-a.yaml").write_text("cohort: Twin\n")
    (folder / "twin-b.yaml").write_text("cohort: twin\n")
    configs, broken = load_all(folder)
    assert [c.cohort for c in configs] == ["tiny"]
    reasons = {Path(p).name: str(e) for p, e in broken}
    assert set(reasons) == {"broken.yaml", "typo.yaml", "evil.yaml", "twin-a.yaml", "twin-b.yaml"}
    assert "not valid YAML" in reasons["broken.yaml"] and "langauge" in reasons["typo.yaml"]
    assert "must start with a letter or a digit" in reasons["evil.yaml"] and "more than one file" in reasons["twin-a.yaml"]
    assert find_config("tiny", folder).cohort == "tiny"  # other files' faults do not hide a good one
    results = run_all(configs, broken=broken, reports=reports, notebooks=[ok], changed_only=False)
    by = {r.cohort: r for r in results}
    assert by["tiny"].status == "ok" and by["broken"].exit_code == 1
    assert max(r.exit_code for r in results) == 1
    index = (reports / "index.html").read_text()
    assert "broken" in index and "not valid YAML" in index and "outside" not in [p.name for p in tmp_path.iterdir()]
    assert not (tmp_path.parent / "outside").exists()


PUBLISHED_CELL = """
    import research.notebook
    ctx = research.notebook.setup(cohort=cohort, warehouse=warehouse, out_dir=out_dir, min_cell_size=min_cell_size)
    (ctx.out_dir / "stray.txt").write_text("written outside the pipeline")
"""


def test_a_notebook_run_by_hand_never_writes_over_a_published_report(setup_run, tmp_path):
    import papermill

    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[ok]).status == "ok"
    before = {p.name: p.read_bytes() for p in (reports / "tiny").iterdir()}
    home = tmp_path / "home"
    home.mkdir()
    nb = _notebook(nbs / "02_by_hand.ipynb", PUBLISHED_CELL)
    env = {"RESEARCH_HOME": str(home)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        # the published folder of a reports tree elsewhere (it holds a manifest.json) ...
        papermill.execute_notebook(str(nb), str(tmp_path / "out1.ipynb"), kernel_name="python3", progress_bar=False,
                                   parameters={"cohort": "tiny", "warehouse": str(wh), "out_dir": str(reports / "tiny")})
        # ... and the default reports folder of the project, as `papermill notebooks/02_... out.ipynb` would use it
        papermill.execute_notebook(str(nb), str(tmp_path / "out2.ipynb"), kernel_name="python3", progress_bar=False,
                                   parameters={"cohort": "tiny", "warehouse": str(wh), "out_dir": "reports/tiny"})
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert {p.name: p.read_bytes() for p in (reports / "tiny").iterdir()} == before
    assert not (home / "reports" / "tiny").exists()
    assert (home / "scratch" / "tiny" / "stray.txt").is_file()
    assert "only `research run` writes" in (tmp_path / "out1.ipynb").read_text()


@pytest.mark.slow
def test_item_kc_and_module_names_that_look_like_formulas_never_become_formula_cells(cohort_files, tmp_path):
    """Real notebooks 01 and 02 on a cohort whose names start with = + - @: every CSV cell is inert text or a number."""
    import pandas as pd

    from research.names import FORMULA_PREFIXES, restore_csv
    from research.pipeline import scheduled_notebooks

    export = pd.read_csv(cohort_files["datashop"], sep="\t", dtype=str, keep_default_na=False)
    prefixes = ["=", "+", "-", "@"]
    items = sorted(export["Problem Name"].unique())
    hostile = {item: prefixes[i % 4] + item + ("+1" if i % 4 == 0 else "") for i, item in enumerate(items)}
    export["Problem Name"] = export["Problem Name"].map(hostile)
    export["Step Name"] = export["Step Name"].map(lambda s: hostile.get(s, s))
    export["KC (Fine)"] = "@" + export["KC (Fine)"]
    export["Level (Module)"] = "=" + export["Level (Module)"]
    path = tmp_path / "hostile_tx.txt"
    export.to_csv(path, sep="\t", index=False)
    config = CohortConfig(cohort="hostile", sources=[Source(path)], warehouse=tmp_path / "w.duckdb", kc_model="Fine")
    nbs = [nb for nb in scheduled_notebooks() if nb.name.startswith(("01_", "02_"))]
    result = run_cohort("hostile", reports=tmp_path / "reports", config=config, notebooks=nbs)
    assert result.status == "ok", result.message
    tables = list((tmp_path / "reports" / "hostile").glob("*.csv"))
    assert {"ingest_summary.csv", "items.csv"} <= {t.name for t in tables}
    for table in tables:
        frame = pd.read_csv(table, dtype=str, keep_default_na=False)
        for col in frame.columns:
            for cell in frame[col]:
                if cell.startswith(FORMULA_PREFIXES):
                    float(cell)  # only a number may start with '-' or '+'
    items_csv = restore_csv(pd.read_csv(tmp_path / "reports" / "hostile" / "items.csv", dtype={"item_id": "string"}))
    assert set(items_csv["item_id"]) <= set(hostile.values()) and len(set(items_csv["item_id"])) > 5


def test_an_unknown_cohort_is_refused_without_a_trace_in_the_index(setup_run):
    from research.errors import ConfigError

    wh, reports, config, nbs = setup_run
    ok = _notebook(nbs / "01_ok.ipynb", OK_CELL)
    assert run_cohort("tiny", reports=reports, config=config, notebooks=[ok]).status == "ok"
    with pytest.raises(ConfigError, match="cohort 'tinny' is not in warehouse .*cohorts there: tiny"):
        run_cohort("tinny", reports=reports, warehouse=wh, notebooks=[ok])
    assert not list(reports.glob(".tinny.failed-*")) and "tinny" not in (reports / "runs.jsonl").read_text()
