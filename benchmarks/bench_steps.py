"""Ingest to AFM at about 800,000 attempts: where the time goes, against the issue 15 targets.

A cohort of 9,400 learners is simulated (research.simulate, about 800,000 attempts), written
as a real DataShop transaction export, and then, in a fresh child process (so its peak
memory is its own): ingested into a new warehouse, read back (attempts + attempt_kcs),
rolled up into student steps with DataShop's KC and opportunity rules
(``opportunities.student_steps``), and one AFM fitted on the first KC model. The classical
item statistics (``classical.item_statistics``) on the same attempts are timed too.

Targets (issue 15, item 9): ingest to AFM under 4 s. Before the roll-up was vectorised it
took 25.8 s on the issue's machine, 16.5 s of which in the roll-up.

This machine is shared (2 cores, several people): each figure is the best of ``--repeat``
runs (default 3) of the steps after the ingest. Usage: python benchmarks/bench_steps.py [--repeat N]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_LEARNERS = 9_400
TARGET_S = 4.0
CHILD = r"""
import json, sys, time, resource
from research.warehouse import Warehouse
from research.estimate import opportunities
from research.estimate.afm import AFM
from research.estimate.classical import item_statistics

path, warehouse, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
with Warehouse(warehouse) as wh:
    wh.ingest([path], cohort="bench")
ingest_s = time.perf_counter() - t0
best = {}
for _ in range(repeat):
    times = {}
    t0 = time.perf_counter()
    with Warehouse(warehouse, read_only=True) as wh:
        attempts, kcs = wh.table("attempts", "bench"), wh.table("attempt_kcs", "bench")
    times["read_tables_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    steps = opportunities.student_steps(attempts, kcs)
    times["student_steps_s"] = time.perf_counter() - t0
    model = sorted(steps["kc_model"].unique())[0]
    t0 = time.perf_counter()
    AFM().fit(steps, kc_model=model)
    times["afm_fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    item_statistics(attempts)
    times["item_statistics_s"] = time.perf_counter() - t0
    best = {k: min(v, best.get(k, v)) for k, v in times.items()}
print(json.dumps({"attempts": len(attempts), "step_kc_rows": len(steps), "ingest_s": ingest_s, **best,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main(argv: list[str]) -> int:
    from research.simulate import simulate_cohort

    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 3
    os.environ.setdefault("RESEARCH_PSEUDONYM_KEY", "benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sim = simulate_cohort(n_learners=N_LEARNERS, seed=1, cohort="bench")
        files = sim.write(Path(tmp) / "raw", formats=("datashop",))
        print(f"simulated and wrote {len(sim.attempts):,} attempts in {time.perf_counter() - t0:.0f} s")
        del sim
        proc = subprocess.run([sys.executable, "-c", CHILD, str(files["datashop"]), str(Path(tmp) / "w.duckdb"), str(repeat)],
                              capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:])
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(r))
    load = os.getloadavg()[0]
    to_afm = r["ingest_s"] + r["read_tables_s"] + r["student_steps_s"] + r["afm_fit_s"]
    rows = [
        ("ingest (DataShop tx file -> warehouse) (s)", r["ingest_s"], None),
        ("read attempts + attempt_kcs back (s)", r["read_tables_s"], None),
        ("student_steps roll-up (s)", r["student_steps_s"], None),
        ("AFM fit, one KC model (s)", r["afm_fit_s"], None),
        ("ingest to AFM, total (s)", to_afm, TARGET_S),
        ("after ingest: read + roll-up + AFM (s)", to_afm - r["ingest_s"], None),
        ("item_statistics (s)", r["item_statistics_s"], None),
        ("peak RSS of the child (MB)", r["peak_rss_mb"], None),
    ]
    print(f"\n{r['attempts']:,} attempts, {r['step_kc_rows']:,} student-step KC rows; best of {repeat}; "
          f"load average {load:.1f} on {os.cpu_count()} cores (timings are pessimistic when it is high)")
    print(f"{'figure':<46} | {'measured':>9} | {'target':>7} | ok")
    for name, value, target in rows:
        ok = "-" if target is None else ("yes" if value < target else "NO")
        print(f"{name:<46} | {value:>9.2f} | {'-' if target is None else f'< {target:g}':>7} | {ok}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
