"""Cohorts in parallel on a Dask LocalCluster against one after another: speed-up and memory per worker.

Issue 19, point 4: 40 simulated cohorts of 2,000 learners, ``research run --all`` serial
(``research.pipeline.run_all``) against 2 workers (``research.cluster.run_parallel``).
Every cohort is simulated once (research.simulate, its own seed) into a cache folder
(``--cache``, reused by later runs and by both halves), as a DataShop transaction export
plus the CSV tables (items, learners, assessments, surveys) with their mappings, all named
in a cohort configuration as its sources, so both runs ingest it (each into its own
warehouse and reports folder) and then run every scheduled notebook at the notebooks'
defaults (``--set KEY=VALUE`` changes one for every cohort), exactly as ``research run --all``
does. The warehouse is a Parquet store by default, where each cohort's ingest is part of
its task; ``--warehouse file`` gives a DuckDB file, ingested first, one cohort after another.

Printed: each cohort's seconds (serial: its whole run; parallel: its ingest and its
notebooks), the seconds of each run, the speed-up against its target (near linear: 0.9 x
workers), and peak memory, sampled every 0.2 s: for the serial run, of this process with
its children (papermill and the notebook's kernel); for the parallel run, per worker, of
the worker process with its children; each also as the largest single process.

This machine is shared (2 cores, several people): the figures are pessimistic and one
full run takes long, so the sizes are flags. Usage:
  python benchmarks/bench_cluster.py --cohorts 40            (the full benchmark; hours on 2 cores)
  python benchmarks/bench_cluster.py --cohorts 4 --learners 300 --set run_bayes=false   (a check)
  options: [--learners 2000] [--workers 2] [--warehouse store|file] [--cache DIR] [--set KEY=VALUE ...]
           [--notebooks 01_ingest_and_validate,02_item_analysis] [--no-serial]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


class TreeSampler:
    """Samples the resident memory of a process and all its descendants (papermill, kernels) every 0.2 s.

    ``ru_maxrss`` will not do: Linux carries a parent's peak over into a forked child.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.2):
        import threading

        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak_tree = self.peak_one = 0
        self.stage: str | None = None  # peaks are also kept per stage (see :meth:`mark`)
        self.stages: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.interval):
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        pass
                self.peak_tree = max(self.peak_tree, sum(rss))
                self.peak_one = max(self.peak_one, max(rss, default=0))
                stage = self.stages.get(self.stage)
                if stage is not None:
                    stage["tree"] = max(stage["tree"], sum(rss))
                    stage["one"] = max(stage["one"], max(rss, default=0))
            except psutil.Error:
                pass

    def mark(self, stage: str) -> None:
        """From now on the samples count for ``stage`` too (its own peaks, and its wall seconds)."""
        now = time.perf_counter()
        if self.stage in self.stages:
            self.stages[self.stage]["s"] += now - self.stages[self.stage].pop("t0")
        self.stage = stage
        self.stages.setdefault(stage, {"tree": 0, "one": 0, "s": 0.0})["t0"] = now

    def stop(self) -> None:
        self.mark(None)
        self._stop.set()
        self._thread.join()

    def stage_mib(self) -> dict[str, dict]:
        """Per stage: wall seconds and peak MiB of the process tree and of its largest process."""
        return {k: {"s": round(v["s"], 1), "tree": round(v["tree"] / 2**20), "largest_process": round(v["one"] / 2**20)}
                for k, v in self.stages.items() if k is not None}

    def peak_mib(self) -> dict:
        return {"tree": round(self.peak_tree / 2**20), "largest_process": round(self.peak_one / 2**20)}


def _start_sampler(dask_worker) -> None:
    dask_worker.research_bench_sampler = TreeSampler()


def _worker_peak(dask_worker) -> dict:
    return dask_worker.research_bench_sampler.peak_mib()


def _cohorts(cache: Path, n: int, learners: int, parameters: dict):
    """The ``n`` cohorts' configurations, their exports simulated once into ``cache`` and reused by every later run."""
    import json

    from research.cohort_config import CohortConfig, Source

    configs, attempts, made = [], [], 0
    for i in range(n):
        name = f"bench-{i + 1:03d}"
        folder = cache / f"{learners}-learners" / name
        done = folder / "files.json"
        if not done.is_file():  # simulated once; a folder without its list was cut short and is made again
            from research.simulate import simulate_cohort

            sim = simulate_cohort(n_learners=learners, seed=100 + i, cohort=name)
            files = {k: str(v) for k, v in sim.write(folder, formats=("datashop",)).items()}
            done.write_text(json.dumps({"files": files, "attempts": len(sim.attempts)}))
            made += 1
        meta = json.loads(done.read_text())
        files = {k: Path(v) for k, v in meta["files"].items()}
        attempts.append(meta["attempts"])
        sources = [Source(files["datashop"])] + [  # attempts, and the tables a cohort's CSV exports carry
            Source(files[table], format="csv", mapping=files[f"{table}_mapping"])
            for table in ("items", "learners", "assessments", "surveys") if table in files]
        configs.append(CohortConfig(cohort=name, sources=sources, parameters=dict(parameters)))
    return configs, attempts, made


def _notebook_s(result) -> float:
    return sum(nb.get("seconds") or 0 for nb in ((result.manifest or {}).get("notebooks") or []))


def main(argv: list[str]) -> int:
    import json

    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, default=40)
    parser.add_argument("--learners", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warehouse", choices=("store", "file"), default="store",
                        help="store: a Parquet store, each cohort ingested in its own task (default); file: one DuckDB file, "
                             "ingested first, one cohort after another")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "course-research" / "bench_cluster",
                        help="folder of the simulated exports, made once and reused (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a notebook parameter for every cohort (YAML value), e.g. --set run_bayes=false; default: the notebooks' defaults")
    parser.add_argument("--notebooks", help="comma-separated notebook names (default: every scheduled notebook)")
    parser.add_argument("--no-serial", action="store_true", help="only the parallel run")
    args = parser.parse_args(argv)

    from dask.distributed import Client

    from research.cluster import INGEST_TOPIC, local_cluster, run_parallel
    from research.pipeline import run_all, scheduled_notebooks

    os.environ.setdefault("RESEARCH_PSEUDONYM_KEY", "benchmark")
    parameters = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    nbs = scheduled_notebooks()
    if args.notebooks:
        wanted = set(args.notebooks.split(","))
        nbs = [nb for nb in nbs if nb.stem in wanted]
    suffix = ".store" if args.warehouse == "store" else ".duckdb"
    t0 = time.perf_counter()
    configs, attempts, made = _cohorts(args.cache, args.cohorts, args.learners, parameters)
    print(f"{args.cohorts} cohorts of {args.learners:,} learners ({sum(attempts) / len(attempts):,.0f} attempts each) in {args.cache}: "
          f"{made} simulated now, {args.cohorts - made} reused, {time.perf_counter() - t0:.0f} s; notebooks: {', '.join(nb.stem for nb in nbs)}; "
          f"parameters: {parameters or 'the notebooks defaults'}; warehouse: {args.warehouse}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        serial_s, serial_per = None, {}
        if not args.no_serial:
            sampler = TreeSampler()
            t0 = time.perf_counter()
            serial = []
            for i, cfg in enumerate(configs, start=1):  # run_all over one cohort at a time: the same run, timed per cohort
                t1 = time.perf_counter()
                serial += run_all([cfg], warehouse=root / f"serial{suffix}", reports=root / "serial", notebooks=nbs, changed_only=False)
                serial_per[cfg.cohort] = time.perf_counter() - t1
                print(f"  serial [{i}/{len(configs)}] {cfg.cohort}: {serial[-1].status} in {serial_per[cfg.cohort]:.0f} s", flush=True)
            serial_s = time.perf_counter() - t0
            serial_mem = sampler.peak_mib()
            sampler.stop()
            print(f"serial: {serial_s:.0f} s, outcomes {sorted({r.status for r in serial})}, peak MiB {serial_mem}", flush=True)
            for r in serial:
                if r.status != "ok":
                    print("  ", r.message[:300])

        cluster = local_cluster(args.workers)
        client = Client(cluster, set_as_default=False)
        try:
            client.run(_start_sampler)
            t0 = time.perf_counter()
            said: list[str] = []

            def progress(line: str) -> None:
                said.append(line)
                if line.startswith("["):
                    print(f"  {args.workers} workers {line} at {time.perf_counter() - t0:.0f} s", flush=True)

            parallel = run_parallel(configs, client=client, warehouse=root / f"parallel{suffix}", reports=root / "parallel",
                                    notebooks=nbs, changed_only=False, progress=progress)
            ingest_line = next((line for line in said if line.startswith("ingest:") and "one after another" in line), "")
            parallel_s = time.perf_counter() - t0
            per_worker = client.run(_worker_peak)
            ingests = {e["cohort"]: e for _, e in client.get_events(INGEST_TOPIC)}
        finally:
            client.close()
            cluster.close()
        print(f"{args.workers} workers: {parallel_s:.0f} s, outcomes {sorted({r.status for r in parallel})}", flush=True)
        for r in parallel:
            if r.status != "ok":
                print("  ", r.message[:300])

    print(f"\nper cohort (s): serial run (ingest and notebooks); on {args.workers} workers: ingest in its task, notebooks")
    print(f"{'cohort':<10} | {'attempts':>9} | {'serial':>7} | {'ingest':>7} | {'notebooks':>9}")
    by_name = {r.cohort: r for r in parallel}
    for cfg, n in zip(configs, attempts):
        e = ingests.get(cfg.cohort)
        print(f"{cfg.cohort:<10} | {n:>9,} | {serial_per.get(cfg.cohort, float('nan')):>7.1f} | "
              f"{(e['end'] - e['start']) if e else float('nan'):>7.1f} | {_notebook_s(by_name[cfg.cohort]) if cfg.cohort in by_name else float('nan'):>9.1f}")
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings are pessimistic when it is high)")
    print(f"{'figure':<58} | {'measured':>10} | {'target':>8} | ok")
    rows = [(f"cohorts x learners", f"{args.cohorts} x {args.learners:,}", "", ""),
            ("attempts per cohort (mean)", f"{sum(attempts) / len(attempts):,.0f}", "", "")]
    if serial_s is not None:
        rows += [("serial run (s)", f"{serial_s:.0f}", "", ""), ("serial, per cohort (s)", f"{serial_s / args.cohorts:.1f}", "", ""),
                 ("serial peak RSS: process tree / largest process (MiB)", f"{serial_mem['tree']:,} / {serial_mem['largest_process']:,}", "", "")]
    rows += [(f"{args.workers} workers (s)", f"{parallel_s:.0f}", "", ""),
             (f"{args.workers} workers, per cohort (s)", f"{parallel_s / args.cohorts:.1f}", "", "")]
    if ingest_line:
        rows.append((f"{args.workers} workers: ingest first, serial (s)", ingest_line.split(" in ")[1].split(" s")[0], "", ""))
    if ingests:
        rows.append((f"{args.workers} workers: ingest in the tasks, sum over cohorts (s)", f"{sum(e['end'] - e['start'] for e in ingests.values()):.0f}", "", ""))
    if serial_s is not None:
        target = 0.9 * args.workers  # near linear: the cohorts are independent tasks
        speedup = serial_s / parallel_s
        rows.append(("speed-up", f"{speedup:.2f}x", f">= {target:.1f}x", "yes" if speedup >= target else "NO"))
    for i, (addr, mem) in enumerate(sorted(per_worker.items())):
        rows.append((f"worker {i + 1} peak RSS: process tree / largest process (MiB)", f"{mem['tree']:,} / {mem['largest_process']:,}", "", ""))
    for label, value, target, ok in rows:
        print(f"{label:<58} | {value:>10} | {target:>8} | {ok}")
    print(json.dumps({"cohorts": args.cohorts, "learners": args.learners, "workers": args.workers, "warehouse": args.warehouse,
                      "serial_s": serial_s, "parallel_s": parallel_s, "serial_per_cohort_s": serial_per, "per_worker_peak_mib": per_worker}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
