"""Cohorts in parallel on a real Dask LocalCluster (2 worker processes on 127.0.0.1).

Six tiny simulated cohorts run once one after another (``run_all``, into a DuckDB file) and
once on the cluster (``run_parallel``, into a Parquet store, where each cohort's ingest is
part of its own task on a worker), each into its own warehouse and reports folder: the
tables they publish are equal. Then a cohort whose notebook kills its own worker process fails
alone: the other cohort's report is renewed and the killed cohort's previous report stays.
A small real notebook (ingest summary, learners' pseudonyms) keeps this to seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import textwrap
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from dask.distributed import Client, SchedulerPlugin

from research.cluster import INGEST_TOPIC, local_cluster, run_cohort_task, run_parallel
from research.cohort_config import CohortConfig, Source
from research.pipeline import run_all
from research.simulate import simulate_cohort

COHORTS = [f"c{i}" for i in range(1, 7)]
PARAMS = 'cohort = "x"\nwarehouse = "data/warehouse.duckdb"\nout_dir = "reports/x"\nmin_cell_size = 10\ndie = False'
DIE = """
    if die:  # a worker that dies mid-run (killed, out of memory): papermill's parent is the Dask worker
        import os, signal, psutil
        os.kill(psutil.Process(os.getppid()).ppid(), signal.SIGKILL)
"""
CELL = """
    import hashlib, pathlib
    import research.describe as describe
    import research.notebook
    ctx = research.notebook.setup(cohort=cohort, warehouse=warehouse, out_dir=out_dir, min_cell_size=min_cell_size)
    ctx.write_table(describe.ingest_summary(ctx.data), "ingest_summary")
    learners = sorted(ctx.data.attempts["learner_id"].unique())
    pathlib.Path(out_dir, "learners.txt").write_text(hashlib.sha256("\\n".join(learners).encode()).hexdigest())
"""


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(PARAMS)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first] + [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in (DIE, CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


class RunSpecs(SchedulerPlugin):
    """Keeps every task's pickled run spec (function and arguments) as the scheduler sees it."""

    name = "research-test-run-specs"

    def __init__(self):
        self.specs: list[bytes] = []

    async def start(self, scheduler):
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs):
        if finish == "processing":
            ts = self.scheduler.tasks.get(key)
            if ts is not None:
                self.specs.append(pickle.dumps(ts.run_spec))


@pytest.fixture(scope="module")
def client():
    cluster = local_cluster(2)
    with Client(cluster, set_as_default=False) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    configs = []
    for i, name in enumerate(COHORTS):
        files = simulate_cohort(n_learners=12, seed=i, cohort=name, n_modules=1, pages_per_module=2).write(root / "exports" / name)
        configs.append(CohortConfig(cohort=name, sources=[Source(Path(files["datashop"]))],
                                    predecessor="c1" if name == "c2" else None))
    (root / "nbs").mkdir()
    return root, configs, [_notebook(root / "nbs" / "01_summary.ipynb")]


def _tables(folder: Path) -> dict[str, pd.DataFrame]:
    out = {p.name: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))}
    out["learners.txt"] = (folder / "learners.txt").read_text()
    return out


@pytest.fixture(scope="module")
def both(setup, client):
    root, configs, nbs = setup
    serial = run_all(configs, warehouse=root / "serial.duckdb", reports=root / "serial", notebooks=nbs, changed_only=False)
    plugin = RunSpecs()
    client.register_plugin(plugin)
    said: list[str] = []
    parallel = run_parallel(configs, client=client, warehouse=root / "parallel.store", reports=root / "parallel",
                            notebooks=nbs, changed_only=False, progress=said.append)
    specs = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.plugins[RunSpecs.name].specs))
    return root, serial, parallel, said, specs, [event for _, event in client.get_events(INGEST_TOPIC)]


def test_six_cohorts_in_parallel_publish_the_same_tables_as_a_serial_run(both):
    root, serial, parallel, said, *_ = both
    assert sorted(r.cohort for r in serial) == sorted(r.cohort for r in parallel) == COHORTS
    assert {r.status for r in serial} == {r.status for r in parallel} == {"ok"}
    assert max(r.exit_code for r in parallel) == 0
    for name in COHORTS:
        a, b = _tables(root / "serial" / name), _tables(root / "parallel" / name)
        assert set(a) == set(b) and "ingest_summary.csv" in a
        for table in a:
            if isinstance(a[table], str):
                assert a[table] == b[table], (name, table)  # the same pseudonyms: the same key reached the ingest
            else:
                pd.testing.assert_frame_equal(a[table], b[table], obj=f"{name}/{table}")
        manifest = json.loads((root / "parallel" / name / "manifest.json").read_text())
        assert manifest["outcome"] == "ok" and [n["notebook"] for n in manifest["notebooks"]] == ["01_summary.ipynb"]
    # c2 ran after its predecessor c1; progress came per notebook and per cohort
    finished = [r.cohort for r in parallel]
    assert finished.index("c1") < finished.index("c2")
    assert any(": [1/1] 01_summary.ipynb done in" in s for s in said), said  # from the workers, as they went
    assert sum(s.startswith("[") and "/6]" in s for s in said) == 6
    # one index, listing every cohort once
    history = [json.loads(line) for line in (root / "parallel" / "runs.jsonl").read_text().splitlines()]
    assert sorted(h["cohort"] for h in history) == COHORTS and {h["outcome"] for h in history} == {"ok"}
    index = (root / "parallel" / "index.html").read_text()
    assert all(f'href="{name}/index.html"' in index for name in COHORTS)


def test_into_a_store_each_cohort_ingests_in_its_own_task_on_the_workers(both):
    root, serial, parallel, said, specs, ingests = both
    # one ingest per cohort, each on a worker process, and both workers ingested (the first two tasks start together)
    assert sorted(e["cohort"] for e in ingests) == COHORTS
    assert os.getpid() not in {e["pid"] for e in ingests}
    assert len({e["worker"] for e in ingests}) == 2 and len({e["pid"] for e in ingests}) == 2
    assert all(e["start"] <= e["end"] for e in ingests)
    assert "ingest: 6 cohort(s) into a store, each in its own task (a store takes one writer per cohort)" in said
    assert not any("one after another" in s for s in said)
    # the store holds every cohort, with the rows of the serial run's warehouse file
    from research.store import open_warehouse

    with open_warehouse(root / "serial.duckdb", read_only=True) as a, open_warehouse(root / "parallel.store", read_only=True) as b:
        for name in COHORTS:
            assert a.counts(name) == b.counts(name), name


def test_a_worker_without_the_runs_pseudonym_key_ingests_nothing(monkeypatch, tmp_path):
    from research.cluster import _check_key, _key_fingerprint
    from research.errors import ConfigError

    expected = _key_fingerprint()
    assert expected != os.environ["RESEARCH_PSEUDONYM_KEY"] and len(expected) == 16
    monkeypatch.setenv("RESEARCH_PSEUDONYM_KEY", "another key")
    with pytest.raises(ConfigError, match="has another pseudonym key than the process that started the run"):
        _check_key(expected)
    monkeypatch.delenv("RESEARCH_PSEUDONYM_KEY")
    monkeypatch.setenv("RESEARCH_PSEUDONYM_KEY_FILE", str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="has no pseudonym key, so it cannot ingest: set RESEARCH_PSEUDONYM_KEY"):
        _check_key(expected)
    assert not (tmp_path / "missing.key").exists()  # no key of its own was made


def test_the_pseudonym_key_is_in_no_task_and_no_log(both, client):
    specs = both[4]
    key = os.environ["RESEARCH_PSEUDONYM_KEY"]
    assert len(specs) >= len(COHORTS)
    secret = key.encode()
    assert all(secret not in spec for spec in specs)
    assert all(b"run_cohort_task" in spec for spec in specs)
    from research.cluster import _key_fingerprint

    assert all(_key_fingerprint().encode() in spec for spec in specs)  # what the workers compare their key with
    logs = json.dumps([client.get_scheduler_logs(), client.get_worker_logs(), client.get_events()], default=str)
    assert key not in logs
    assert key not in repr(run_cohort_task)


def test_a_killed_worker_fails_only_its_cohort_and_keeps_its_previous_report(both, setup, client):
    root, configs, nbs = setup
    reports = root / "parallel"
    before = {name: json.loads((reports / name / "manifest.json").read_text())["run_id"] for name in ("c3", "c4")}
    victim = next(c for c in configs if c.cohort == "c4")
    victim = CohortConfig(cohort="c4", sources=victim.sources, parameters={"die": True})
    other = next(c for c in configs if c.cohort == "c3")
    missing = CohortConfig(cohort="c9", sources=[Source(root / "exports" / "nowhere.txt")], path=root / "c9.yaml")
    results = {r.cohort: r for r in run_parallel([other, victim, missing], client=client, warehouse=root / "parallel.duckdb",
                                                 reports=reports, notebooks=nbs, changed_only=False)}
    # a cohort whose ingest fails gets no task and the serial run's message and exit code
    assert results["c9"].status == "failed" and results["c9"].exit_code == 1
    assert "nowhere.txt" in results["c9"].message and "does not exist" in results["c9"].message
    assert results["c3"].status == "ok" and results["c3"].exit_code == 0
    assert json.loads((reports / "c3" / "manifest.json").read_text())["run_id"] != before["c3"]
    failed = results["c4"]
    assert failed.status == "failed" and failed.exit_code == 3
    assert "worker" in failed.message and "c4" in failed.message and "unchanged" in failed.message
    # the previous report is untouched; the dead run's folder is kept as a failed folder and recorded
    assert json.loads((reports / "c4" / "manifest.json").read_text())["run_id"] == before["c4"]
    assert _tables(reports / "c4")["learners.txt"]
    assert not list(reports.glob(".c4.run-*")) and list(reports.glob(".c4.failed-*"))
    history = [json.loads(line) for line in (reports / "runs.jsonl").read_text().splitlines()]
    assert any(h["cohort"] == "c4" and h["outcome"] == "killed" and "worker" in h["reason"] for h in history)
    assert any(h["cohort"] == "c9" and h["outcome"] == "failed" for h in history)
    assert "c9" in (reports / "index.html").read_text()
    # the cluster is whole again for the next run: the nanny restarted the worker
    client.wait_for_workers(2, timeout=30)


@pytest.mark.parametrize("argv, message", [
    (["--cohort", "c1", "--workers", "2"], "use them with --all"),
    (["--all", "--workers", "0"], "--workers must be 1 or more"),
    (["--all", "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
])
def test_run_refuses_flags_that_do_not_go_together(argv, message, capsys):
    from research.cli import main

    assert main(["run", *argv]) == 1
    assert message in capsys.readouterr().err


def test_run_all_with_workers_or_a_scheduler_goes_to_the_cluster_and_one_worker_stays_serial(tmp_path, monkeypatch):
    import research.cluster
    import research.pipeline
    from research.cli import main
    from research.pipeline import RunResult

    (tmp_path / "c1.yaml").write_text("language: en\n")
    calls = []
    monkeypatch.setattr(research.cluster, "run_parallel", lambda configs, **kw: calls.append(("parallel", kw)) or
                        [RunResult(c.cohort, "ok", 0, message="ok") for c in configs])
    monkeypatch.setattr(research.pipeline, "run_all", lambda configs, **kw: calls.append(("serial", kw)) or
                        [RunResult(c.cohort, "ok", 0, message="ok") for c in configs])
    base = ["run", "--all", "--config-dir", str(tmp_path), "--out", str(tmp_path / "r"), "-q"]
    assert main([*base, "--workers", "3"]) == 0
    assert main([*base, "--scheduler", "tcp://10.0.0.1:8786", "--changed"]) == 0
    assert main([*base, "--workers", "1"]) == 0 and main(base) == 0
    assert [c[0] for c in calls] == ["parallel", "parallel", "serial", "serial"]
    assert calls[0][1]["workers"] == 3 and calls[1][1]["scheduler"] == "tcp://10.0.0.1:8786" and calls[1][1]["changed_only"]


def test_a_scheduler_that_cannot_be_reached_is_a_clear_error():
    from research.cluster import connect
    from research.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        connect("tcp://127.0.0.1:9", timeout=1)
