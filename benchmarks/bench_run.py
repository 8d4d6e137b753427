"""A whole cohort run (`research run`) for 8,000 learners: total and per-notebook seconds.

Target (issue 15, item 9): under 60 s. The cohort is simulated (research.simulate), written
as a DataShop transaction export plus the CSV tables with their mappings, and ingested into
a new warehouse; then ``research.pipeline.run_cohort`` runs every scheduled notebook with the
settings of the suite's 8,000-learner run (a cohort file with ``run_bayes: false`` and
``n_boot: 100``; ``--bayes`` keeps the notebooks' defaults, which sample the Bayesian gain
model with PyMC) and each notebook's seconds are printed as the pipeline reports them,
with the CPU seconds of the notebook processes together. The table read that every
notebook does (``cohort.load``) is timed on its own as well.

This machine is shared (2 cores, several people): the wall-clock figure is pessimistic when
the load average is high; the CPU seconds say what the run costs.
``--jobs N`` sets how many notebooks run at once where they may (the default of
``research run``: 2 on two cores or more; 1 gives the run one notebook at a time).
Usage: python benchmarks/bench_run.py [--learners N] [--bayes] [--jobs N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 60.0


def main(argv: list[str]) -> int:
    from research import cohort as cohort_mod
    from research.cohort_config import CohortConfig
    from research.pipeline import run_cohort
    from research.schedule import check_jobs, default_jobs
    from research.simulate import simulate_cohort
    from research.warehouse import Warehouse

    n = int(argv[argv.index("--learners") + 1]) if "--learners" in argv else 8_000
    jobs = check_jobs(argv[argv.index("--jobs") + 1], where="--jobs") if "--jobs" in argv else default_jobs()
    os.environ.setdefault("RESEARCH_PSEUDONYM_KEY", "benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        sim = simulate_cohort(n_learners=n, seed=1, cohort="bench")
        files = sim.write(tmp / "raw", formats=("datashop",))
        n_attempts = len(sim.attempts)
        del sim
        with Warehouse(tmp / "w.duckdb") as wh:
            wh.ingest([p for k, p in files.items() if not k.endswith("_mapping")], cohort="bench")
        print(f"simulated, wrote and ingested {n:,} learners ({n_attempts:,} attempts) in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        cohort_mod.load("bench", tmp / "w.duckdb")
        load_s = time.perf_counter() - t0
        lines = []
        config = None if "--bayes" in argv else CohortConfig(
            cohort="bench", parameters={"run_bayes": False, "n_boot": 100})
        t0 = time.perf_counter()
        cpu0 = os.times()
        result = run_cohort("bench", warehouse=tmp / "w.duckdb", reports=tmp / "reports", progress=lines.append,
                            config=config, jobs=jobs)
        run_s = time.perf_counter() - t0
        cpu1 = os.times()
        cpu_s = (cpu1.children_user - cpu0.children_user) + (cpu1.children_system - cpu0.children_system) + \
            (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    for line in lines:
        print(" ", line)
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings are pessimistic when it is high); "
          f"outcome: {getattr(result, 'status', result.__class__.__name__)}; notebooks at once (--jobs): {jobs}")
    print(f"{'figure':<44} | {'measured':>9} | {'target':>7} | ok")
    print(f"{'cohort.load, all six tables (s)':<44} | {load_s:>9.2f} | {'-':>7} | -")
    print(f"{'research run, ' + format(n, ',') + ' learners (s)':<44} | {run_s:>9.2f} | {'< ' + format(TARGET_S, 'g'):>7} | "
          f"{'yes' if run_s < TARGET_S else 'NO'}")
    print(f"{'  CPU seconds of the run (all processes)':<44} | {cpu_s:>9.2f} | {'-':>7} | -")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
