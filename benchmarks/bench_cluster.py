"""Cohorts in parallel on a Dask LocalCluster against one after another: speed-up and memory per worker.

Issue 19, point 4: 40 simulated cohorts of 2,000 learners, ``research run --all`` serial
(``research.pipeline.run_all``) against 2 workers (``research.cluster.run_parallel``).
Every cohort is simulated (research.simulate, its own seed), written as a DataShop
transaction export plus the CSV tables (items, learners, assessments, surveys) with their
mappings, all named in a cohort configuration as its sources, so both runs
ingest it (each into its own warehouse and reports folder) and then run every scheduled
notebook (PyMC off, the default), exactly as ``research run --all`` does.

Printed: seconds of each run, the speed-up, seconds per cohort, attempts per cohort, and
peak memory, sampled every 0.2 s: for the serial run, of this process with its children
(papermill and the notebook's kernel); for the parallel run, per worker, of the worker
process with its children; each also as the largest single process.

This machine is shared (2 cores, several people): the figures are pessimistic and one
full run takes long, so the sizes are flags. Usage:
  python benchmarks/bench_cluster.py [--cohorts 40] [--learners 2000] [--workers 2]
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


def _cohorts(root: Path, n: int, learners: int):
    from research.cohort_config import CohortConfig, Source
    from research.simulate import simulate_cohort

    configs, attempts = [], []
    for i in range(n):
        name = f"bench-{i + 1:03d}"
        sim = simulate_cohort(n_learners=learners, seed=100 + i, cohort=name)
        files = sim.write(root / "raw" / name, formats=("datashop",))
        attempts.append(len(sim.attempts))
        sources = [Source(Path(files["datashop"]))] + [  # attempts, and the tables a cohort's CSV exports carry
            Source(Path(files[table]), format="csv", mapping=Path(files[f"{table}_mapping"]))
            for table in ("items", "learners", "assessments", "surveys") if table in files]
        configs.append(CohortConfig(cohort=name, sources=sources))
    return configs, attempts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohorts", type=int, default=40)
    parser.add_argument("--learners", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--notebooks", help="comma-separated notebook names (default: every scheduled notebook)")
    parser.add_argument("--no-serial", action="store_true", help="only the parallel run")
    args = parser.parse_args(argv)

    from dask.distributed import Client

    from research.cluster import local_cluster, run_parallel
    from research.pipeline import run_all, scheduled_notebooks

    os.environ.setdefault("RESEARCH_PSEUDONYM_KEY", "benchmark")
    nbs = scheduled_notebooks()
    if args.notebooks:
        wanted = set(args.notebooks.split(","))
        nbs = [nb for nb in nbs if nb.stem in wanted]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        configs, attempts = _cohorts(root, args.cohorts, args.learners)
        print(f"simulated and wrote {args.cohorts} cohorts of {args.learners:,} learners "
              f"({sum(attempts) / len(attempts):,.0f} attempts each) in {time.perf_counter() - t0:.0f} s; "
              f"notebooks: {', '.join(nb.stem for nb in nbs)}", flush=True)

        serial_s = None
        if not args.no_serial:
            sampler = TreeSampler()
            t0 = time.perf_counter()
            serial = run_all(configs, warehouse=root / "serial.duckdb", reports=root / "serial", notebooks=nbs, changed_only=False)
            serial_s = time.perf_counter() - t0
            serial_mem = sampler.peak_mib()
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
            parallel = run_parallel(configs, client=client, warehouse=root / "parallel.duckdb", reports=root / "parallel",
                                    notebooks=nbs, changed_only=False, progress=said.append)
            ingest_line = next((line for line in said if line.startswith("ingest:")), "")
            parallel_s = time.perf_counter() - t0
            per_worker = client.run(_worker_peak)
        finally:
            client.close()
            cluster.close()
        print(f"{args.workers} workers: {parallel_s:.0f} s, outcomes {sorted({r.status for r in parallel})}", flush=True)
        for r in parallel:
            if r.status != "ok":
                print("  ", r.message[:300])

    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings are pessimistic when it is high)")
    print(f"{'figure':<58} | {'measured':>10}")
    rows = [(f"cohorts x learners", f"{args.cohorts} x {args.learners:,}"),
            ("attempts per cohort (mean)", f"{sum(attempts) / len(attempts):,.0f}")]
    if serial_s is not None:
        rows += [("serial run (s)", f"{serial_s:.0f}"), ("serial, per cohort (s)", f"{serial_s / args.cohorts:.1f}"),
                 ("serial peak RSS: process tree / largest process (MiB)", f"{serial_mem['tree']:,} / {serial_mem['largest_process']:,}")]
    rows += [(f"{args.workers} workers (s)", f"{parallel_s:.0f}"),
             (f"{args.workers} workers, per cohort (s)", f"{parallel_s / args.cohorts:.1f}")]
    if ingest_line:
        rows.append((f"{args.workers} workers: ingest first, serial (s)", ingest_line.split(" in ")[1].split(" s")[0]))
    if serial_s is not None:
        rows.append(("speed-up", f"{serial_s / parallel_s:.2f}x"))
    for i, (addr, mem) in enumerate(sorted(per_worker.items())):
        rows.append((f"worker {i + 1} peak RSS: process tree / largest process (MiB)", f"{mem['tree']:,} / {mem['largest_process']:,}"))
    for label, value in rows:
        print(f"{label:<58} | {value:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
