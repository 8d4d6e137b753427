"""Notebooks of one cohort run at the same time (research.schedule): the same tables, in less time.

The claim behind :data:`research.schedule.CONCURRENT` is checked on the tables' schemas: no
learner count of one notebook of a set can be nested in a count of another's, so the
small-cell protection never relates them. Then real runs: toy notebooks show the order
and the stop on a failure; the real notebooks on a small cohort with small groups give
byte-equal tables one at a time and two at a time.
"""

from __future__ import annotations

import json
import textwrap
import time
from itertools import combinations, permutations
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from research.cohort_config import CohortConfig, Source
from research.errors import ConfigError, SchemaError
from research.notebook import Context
from research.pipeline import run_cohort, scheduled_notebooks
from research.privacy import count_declarations
from research.schedule import CONCURRENT, NOTEBOOK_TABLES, check_jobs, waits_for
from research.simulate import simulate_cohort

# -- the claim, on the schemas ------------------------------------------------------------


def _fact_kinds(table: str) -> list[tuple[frozenset, frozenset]]:
    """Per learner count of ``table``: (dimensions always there, dimensions that an ``unless`` may drop)."""
    out = []
    for spec in count_declarations(table).values():
        required = frozenset(lit["dim"] for lit in spec.get("where", []) if "unless" not in lit)
        optional = frozenset(lit["dim"] for lit in spec.get("where", []) if "unless" in lit)
        out.append((required, optional))
    return out


def _may_be_same(a: str, b: str) -> bool:
    """Whether two dimension templates (``item:{item_id}``, ``{attribute}``) can name the same dimension.

    A template that starts with a placeholder can be anything (an attribute is named by the
    data); otherwise the texts before their first placeholders must agree.
    """
    pa, pb = a.split("{", 1)[0], b.split("{", 1)[0]
    if not pa or not pb:
        return True
    if "{" not in a and "{" not in b:
        return a == b
    return pa.startswith(pb) or pb.startswith(pa)


def _may_nest(inner: tuple, outer: tuple) -> bool:
    """Whether the learners of a count of kind ``outer`` can be a subset of a count of kind ``inner``:
    every dimension ``inner`` always has may be a different one of ``outer``'s (the only way the
    privacy check relates two counts: a pair, or a split whose parts are nested in the total)."""
    required, _ = inner
    dims = sorted(outer[0] | outer[1])
    if len(required) > len(dims):
        return False
    # each of inner's dimensions is a different one of outer's: a matching, tried in full (a few dimensions each)
    return any(all(_may_be_same(d, e) for d, e in zip(sorted(required), chosen)) for chosen in permutations(dims, len(required)))


def test_no_learner_count_of_one_concurrent_notebook_can_be_nested_in_another_notebooks():
    assert CONCURRENT and all(len(s) >= 2 for s in CONCURRENT)
    for peers in CONCURRENT:
        assert peers <= set(NOTEBOOK_TABLES)
        for a, b in combinations(sorted(peers), 2):
            assert not NOTEBOOK_TABLES[a] & NOTEBOOK_TABLES[b], (a, b)
            for ta in NOTEBOOK_TABLES[a]:
                for tb in NOTEBOOK_TABLES[b]:
                    for fa in _fact_kinds(ta):
                        for fb in _fact_kinds(tb):
                            assert fa[0] and fb[0], f"a count over all learners in {ta} or {tb} relates to everything"
                            assert not _may_nest(fa, fb) and not _may_nest(fb, fa), (ta, fa, tb, fb)


def test_the_check_would_catch_tables_that_can_be_related():
    # the items' counts sit inside the funnel's (learners who reached a point): these two could never run together
    assert _may_nest(_fact_kinds("funnel")[0], _fact_kinds("items")[0])
    # group sizes nest in the gains' counts of the same group
    assert any(_may_nest(g, f) for g in _fact_kinds("group_sizes") for f in _fact_kinds("gains"))
    assert not _may_nest(_fact_kinds("kcs")[0], _fact_kinds("items")[0])


def test_each_notebook_waits_for_the_ones_before_it_except_its_own_set():
    names = [nb.stem for nb in scheduled_notebooks()]
    waits = waits_for(names)
    assert waits["01_ingest_and_validate"] == frozenset()
    for name in ("02_item_analysis", "03_learning_curves", "04_learning_gains"):
        assert waits[name] == {"01_ingest_and_validate"}
    assert waits["05_equity_and_engagement"] == set(names[:4])
    assert waits["06_recommendations"] == set(names[:5])
    assert waits_for(["03_learning_curves", "05_equity_and_engagement"])["05_equity_and_engagement"] == {"03_learning_curves"}


@pytest.mark.parametrize("value", [0, -1, "two", 1.5, True, "1 2"])
def test_a_number_of_notebooks_at_once_must_be_a_whole_number_from_one(value):
    with pytest.raises(ConfigError, match="whole number of notebooks"):
        check_jobs(value)
    assert check_jobs("3") == 3 and check_jobs(1) == 1


def test_a_notebook_of_a_concurrent_set_cannot_write_a_table_it_does_not_declare(tmp_path):
    ctx = Context(cohort="x", warehouse=tmp_path / "w.duckdb", out_dir=tmp_path, min_cell_size=5, notebook="02_item_analysis")
    with pytest.raises(SchemaError, match="NOTEBOOK_TABLES"):
        ctx.write_table(pd.DataFrame(), "gaps")


# -- runs ---------------------------------------------------------------------------------

PARAMS = 'cohort = "x"\nwarehouse = "data/warehouse.duckdb"\nout_dir = "reports/x"\nmin_cell_size = 10\nseconds = 0.0\nfail = False'
CELL = """
    import json, os, pathlib, time
    import psutil
    launched = psutil.Process(os.getppid()).create_time()  # the kernel's parent: the notebook's process (research.launch)
    start = time.time()
    time.sleep(seconds)
    if fail:
        raise RuntimeError("planted failure")
    with open(pathlib.Path(out_dir, "times.jsonl"), "a") as fh:
        fh.write(json.dumps({"nb": NAME, "launched": launched, "start": start, "end": time.time()}) + "\\n")
"""


def _toy(folder: Path, name: str) -> Path:
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(PARAMS)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first, nbformat.v4.new_code_cell(textwrap.dedent(CELL).replace("NAME", repr(name)))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("schedule")
    files = simulate_cohort(n_learners=60, seed=3, cohort="sched", n_modules=2, pages_per_module=2).write(
        root / "exports", formats=("datashop",))
    (root / "nbs").mkdir()
    names = ["01_ingest_and_validate", "02_item_analysis", "03_learning_curves", "04_learning_gains", "05_equity_and_engagement"]
    return root, files, [_toy(root / "nbs", n) for n in names]


def _config(root: Path, files: dict, min_cell_size: int = 10, **parameters) -> CohortConfig:
    sources = [Source(Path(files["datashop"]))] + [  # attempts, and the tables a cohort's CSV exports carry
        Source(Path(files[table]), format="csv", mapping=Path(files[f"{table}_mapping"]))
        for table in ("items", "learners", "assessments", "surveys") if table in files]
    return CohortConfig(cohort="sched", sources=sources, warehouse=root / "w.duckdb", parameters=parameters,
                        min_cell_size=min_cell_size)


def test_two_at_a_time_overlaps_only_the_notebooks_of_a_set_and_keeps_their_order(small, tmp_path):
    root, files, nbs = small
    config = _config(root, files, seconds=2.0)
    said: list[str] = []
    result = run_cohort("sched", reports=tmp_path / "r", config=config, notebooks=nbs, jobs=2, progress=said.append)
    assert result.status == "ok", result.message
    times = {r["nb"]: r for r in map(json.loads, (result.report_dir / "times.jsonl").read_text().splitlines())}
    first, items, kcs, gains, equity = (times[n.stem] for n in nbs)
    assert items["start"] >= first["end"] and kcs["start"] >= first["end"]
    assert items["start"] < kcs["end"] and kcs["start"] < items["end"]  # 02 and 03 ran at the same time
    assert gains["start"] >= min(items["end"], kcs["end"])  # 04 waited for a free slot (two at a time)
    assert equity["start"] >= max(items["end"], kcs["end"], gains["end"])
    # each kernel was started ahead, while the notebooks before it ran: one process more than two
    assert items["launched"] < first["end"] and kcs["launched"] < first["end"]
    assert gains["launched"] < min(items["end"], kcs["end"]) and equity["launched"] < gains["end"]
    manifest = json.loads((result.report_dir / "manifest.json").read_text())
    assert [n["notebook"] for n in manifest["notebooks"]] == [n.name for n in nbs]  # in run order, not finishing order
    assert all(n["outcome"] == "ok" for n in manifest["notebooks"])
    assert all((result.report_dir / f"{n.stem}.html").is_file() for n in nbs)
    log = (result.report_dir / "run.log").read_text()
    assert all(f"== {n.name} (ok)" in log for n in nbs) and not list(result.report_dir.glob(".*.log"))
    assert sum("done in" in s for s in said) == 5


def test_a_failure_stops_the_notebooks_running_beside_it_and_starts_no_other(small, tmp_path):
    root, files, nbs = small
    slow, bad = _toy(tmp_path, "02_item_analysis"), _toy(tmp_path, "03_learning_curves")
    for path, settings in ((slow, "seconds = 60.0\n"), (bad, "fail = True\nseconds = 1.0\n")):  # after the parameters
        nb = nbformat.read(path, as_version=4)
        nb.cells[1].source = settings + nb.cells[1].source
        nbformat.write(nb, path)
    config = _config(root, files)
    t0 = time.perf_counter()
    result = run_cohort("sched", reports=tmp_path / "r", config=config, notebooks=[nbs[0], slow, bad, nbs[3], nbs[4]], jobs=2,
                        timeout_s=300)
    assert time.perf_counter() - t0 < 50  # the 60-second notebook beside it was stopped
    assert result.status == "failed" and result.exit_code == 3
    assert "03_learning_curves.ipynb" in result.message and "RuntimeError: planted failure" in result.message
    manifest = json.loads((result.report_dir / "manifest.json").read_text())
    outcomes = {n["notebook"]: n["outcome"] for n in manifest["notebooks"]}
    assert outcomes == {"01_ingest_and_validate.ipynb": "ok", "02_item_analysis.ipynb": "stopped",
                        "03_learning_curves.ipynb": "failed"}
    assert not (tmp_path / "r" / "sched").exists()


def test_a_kernel_talks_over_unix_sockets_in_a_folder_of_its_own_that_is_gone_after(small, tmp_path):
    """No TCP port to race another starting kernel for ("Address already in use" killed kernels when
    several started at once): the kernel's endpoints are socket files in the notebook's own folder,
    which goes when the process ends, and when the run kills it."""
    import stat

    from research import pipeline

    _, _, nbs = small
    runs = []
    for k in range(3):  # three at once, as a run with two notebooks at a time and one started ahead
        runs.append(pipeline._start_notebook(nbs[0], tmp_path / f"out{k}.ipynb", {}, timeout_s=60, log=tmp_path / f"{k}.log"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(len(list(Path(r.sockets).glob("kernel-*"))) >= 5 for r in runs):
        time.sleep(0.2)
    for r in runs:
        found = list(Path(r.sockets).glob("kernel-*"))
        assert len(found) >= 5 and all(stat.S_ISSOCK(p.stat().st_mode) for p in found), (r.sockets, found)
        assert r.proc.poll() is None  # alive and waiting for go
    runs[0].proc.communicate(b"no\n", timeout=120)  # told not to run: shuts its kernel down and cleans up
    assert runs[0].proc.returncode == 0 and not Path(runs[0].sockets).exists()
    for r in runs[1:]:
        pipeline._stop(r)  # killed: the run removes what the process could not
        assert not Path(r.sockets).exists()


def test_the_real_notebooks_publish_the_same_tables_one_or_two_at_a_time(small, tmp_path):
    """A small cohort (60 learners, cells of 5) whose groups are small: the privacy check hides
    cells in several tables, and the record of analyses has rows from every notebook."""
    root, files, _ = small
    real = [nb for nb in scheduled_notebooks() if nb.stem < "06"]
    config = _config(root, files, min_cell_size=5, run_bayes=False, n_boot=20, max_learners=60)
    out = {}
    for jobs in (1, 2):
        result = run_cohort("sched", reports=tmp_path / f"r{jobs}", config=config, notebooks=real, jobs=jobs)
        assert result.status == "ok", result.message
        out[jobs] = result.report_dir
    one = sorted(p.name for p in out[1].glob("*.csv"))
    assert one == sorted(p.name for p in out[2].glob("*.csv"))
    assert {"analyses.csv", "suppressed_cells.csv", "items.csv", "kcs.csv", "gains.csv", "funnel.csv"} <= set(one)
    for name in one:
        a, b = (out[1] / name).read_bytes(), (out[2] / name).read_bytes()
        if a != b:  # only the KC search's clock columns may differ between two runs
            timed = [c for c in pd.read_csv(out[1] / name).columns if c.endswith("_seconds")]
            assert timed, name
            pd.testing.assert_frame_equal(pd.read_csv(out[1] / name).drop(columns=timed),
                                          pd.read_csv(out[2] / name).drop(columns=timed), obj=name)
    hidden = pd.read_csv(out[2] / "suppressed_cells.csv")
    assert len(hidden) and hidden["table"].is_monotonic_increasing
    analyses = pd.read_csv(out[2] / "analyses.csv")
    assert set(analyses["notebook"]) >= {"02_item_analysis", "03_learning_curves", "04_learning_gains"}
    assert analyses["notebook"].is_monotonic_increasing
    figures = sorted(p.name for p in (out[1] / "figures").glob("*.alt.txt"))
    assert figures == sorted(p.name for p in (out[2] / "figures").glob("*.alt.txt"))
    assert not list(out[2].rglob(".*"))  # no lock or temporary file left in the published folder


def test_a_cohort_too_large_for_two_notebooks_in_memory_runs_them_one_at_a_time(monkeypatch):
    import research.schedule as schedule

    monkeypatch.delenv("RESEARCH_NOTEBOOK_JOBS", raising=False)
    monkeypatch.setattr(schedule.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(schedule, "available_gb", lambda: 24.0)
    assert schedule.default_jobs(690_245) == 2  # 8,000 learners: about 3 GB for two
    said: list[str] = []
    assert schedule.default_jobs(11_000_000, say=said.append) == 1  # about 37 GB for two
    assert said == ["11,000,000 attempts: notebooks one at a time (two at once would need about 37 GB, 24 GB is available; "
                    "--jobs 2 overrides)"]
    assert schedule.default_jobs(690_245, say=said.append) == 2 and len(said) == 1
    assert schedule.two_at_once_gb(6_063_363) == pytest.approx(2 * 10.4, abs=0.5)  # notebook 03's measured peak, twice
    monkeypatch.setenv("RESEARCH_NOTEBOOK_JOBS", "3")
    assert schedule.default_jobs(11_000_000) == 3
    monkeypatch.setenv("RESEARCH_NOTEBOOK_JOBS", "0")
    with pytest.raises(ConfigError, match="RESEARCH_NOTEBOOK_JOBS"):
        schedule.default_jobs()
    monkeypatch.delenv("RESEARCH_NOTEBOOK_JOBS")
    monkeypatch.setattr(schedule.os, "cpu_count", lambda: 1)
    assert schedule.default_jobs(1000) == 1


def test_the_memory_available_is_read_from_the_machine():
    from research.schedule import available_gb

    assert 0.1 < available_gb() < 100_000
