"""Ingest to AFM at about 800,000 attempts: where the time goes, against the issue 15 targets.

A cohort of 9,400 learners is simulated (research.simulate, about 800,000 attempts), written
as a real DataShop transaction export, and then, in a fresh child process (so its peak
memory is its own): ingested into a new warehouse, read back (attempts + attempt_kcs),
rolled up into student steps with DataShop's KC and opportunity rules
(``opportunities.student_steps``), and one AFM fitted on the first KC model. The classical
item statistics (``classical.item_statistics``) on the same attempts are timed too.

Targets (issue 15, item 9): from the warehouse to an AFM (read attempts + attempt_kcs,
roll-up, AFM fit) under 4 s, and the same with the ingest of the raw file counted. Before the roll-up was vectorised it took 25.8 s on the
issue's machine, 16.5 s of which in the roll-up. The ingest itself is printed too (its own
target is in bench_ingest.py), and so is the total from the raw file to the AFM.

This machine is shared (2 cores, several people): each figure is the best of ``--repeat``
runs (default 3), the ingest's included (each into a new warehouse), in wall and in CPU seconds (all threads
of the process; under load the CPU figure is the steadier one). Usage: python
benchmarks/bench_steps.py [--repeat N]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_LEARNERS = 9_400
TARGET_S = 4.0
CHILD = r"""
import json, os, sys, time
from research.warehouse import Warehouse
from research.estimate import opportunities
from research.estimate.afm import AFM
from research.estimate.classical import item_statistics

path, warehouse, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
ingest_s = ingest_cpu = float("inf")
for k in range(repeat):  # each into a new warehouse; the last one is read below
    if k:
        os.remove(warehouse)
    t0, c0 = time.perf_counter(), time.process_time()
    with Warehouse(warehouse) as wh:
        wh.ingest([path], cohort="bench")
    ingest_s, ingest_cpu = min(ingest_s, time.perf_counter() - t0), min(ingest_cpu, time.process_time() - c0)
best = {}


def peak_mb():
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec (the parent's peak)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


def timed(times, name, fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    times[name + "_s"], times[name + "_cpu"] = time.perf_counter() - t0, time.process_time() - c0
    return out


def read():
    with Warehouse(warehouse, read_only=True) as wh:
        return wh.table("attempts", "bench"), wh.table("attempt_kcs", "bench")


for _ in range(repeat):
    times = {}
    attempts, kcs = timed(times, "read_tables", read)
    steps = timed(times, "student_steps", lambda: opportunities.student_steps(attempts, kcs))
    model = sorted(steps["kc_model"].unique())[0]
    timed(times, "afm_fit", lambda: AFM().fit(steps, kc_model=model))
    timed(times, "item_statistics", lambda: item_statistics(attempts))
    best = {k: min(v, best.get(k, v)) for k, v in times.items()}
print(json.dumps({"attempts": len(attempts), "step_kc_rows": len(steps), "ingest_s": ingest_s, "ingest_cpu": ingest_cpu, **best,
                  "peak_rss_mb": peak_mb()}))
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
        os.sync()  # the export just written is on disk: its write-back does not run during the ingest
        proc = subprocess.run([sys.executable, "-c", CHILD, str(files["datashop"]), str(Path(tmp) / "w.duckdb"), str(repeat)],
                              capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:])
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(r))
    load = os.getloadavg()[0]
    after = {u: r[f"read_tables_{u}"] + r[f"student_steps_{u}"] + r[f"afm_fit_{u}"] for u in ("s", "cpu")}
    rows = [
        ("ingest (DataShop tx file -> warehouse)", "ingest", None),
        ("read attempts + attempt_kcs back", "read_tables", None),
        ("student_steps roll-up", "student_steps", None),
        ("AFM fit, one KC model", "afm_fit", None),
        ("warehouse to AFM: read + roll-up + AFM", after, TARGET_S),
        ("raw file to AFM: ingest + the above", {u: after[u] + r[f"ingest_{u}"] for u in ("s", "cpu")}, TARGET_S),
        ("item_statistics", "item_statistics", None),
    ]
    print(f"\n{r['attempts']:,} attempts, {r['step_kc_rows']:,} student-step KC rows; best of {repeat}; "
          f"load average {load:.1f} on {os.cpu_count()} cores (wall timings are pessimistic when it is high)")
    print(f"{'figure':<46} | {'wall (s)':>8} | {'CPU (s)':>8} | {'target':>7} | ok")
    for name, key, target in rows:
        wall, cpu = (key["s"], key["cpu"]) if isinstance(key, dict) else (r[f"{key}_s"], r[f"{key}_cpu"])
        ok = "-" if target is None else ("yes" if wall < target else "NO")
        print(f"{name:<46} | {wall:>8.2f} | {cpu:>8.2f} | {'-' if target is None else f'< {target:g}':>7} | {ok}")
    print(f"{'peak RSS of the child (MB)':<46} | {r['peak_rss_mb']:>8.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
