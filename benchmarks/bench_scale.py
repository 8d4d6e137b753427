"""The largest single cohort one machine fits: ingest and AFM peak memory at 1M and 4M attempts, or (--end-to-end) every stage of a whole run.

Issue 19, point 5. For each size a cohort is simulated (research.simulate; about 85
attempts per learner), written as a real DataShop transaction export, and then two fresh
child processes (so each peak resident memory is its own) do:

1. ingest: the export into a new warehouse (DuckDB file, the default);
2. fit: read attempts + attempt_kcs back, roll them up into student steps
   (``opportunities.student_steps``) and fit one AFM on the first KC model, as the
   pipeline's notebook 03 does.

Printed per size: time and peak RSS of each child, and the rows in play. From the two sizes
a straight line (peak = a + b x attempts) is extrapolated to the attempts whose larger
peak reaches the memory one 24 GB machine leaves a run (20 GB: the OS, the notebook kernel
and DuckDB's own buffers take the rest). That figure is an extrapolation, not a measurement.

The machine this ran on is shared (2 cores, several people): times are pessimistic; memory
is not affected. The first size is also ingested into a Parquet store (``--no-store``: not).
Usage: python benchmarks/bench_scale.py [--sizes 1000000,4000000] [--limit-gb 20] [--no-store]

``--end-to-end``: a whole cohort instead, as a user runs it: simulate (DataShop export and
the CSV tables), ingest them (a child process), then ``research run --cohort`` with every
scheduled notebook at its defaults (PyMC gain model and 400 bootstrap replicates included).
Printed per stage (ingest, each notebook, the report's final rendering and publication):
wall seconds and peak RSS of the whole process tree (papermill, the kernel) and of its largest
process, sampled every 0.1 s; with two or more sizes, each stage's slopes per million attempts
and per thousand learners, and where the straight line reaches ``--limit-gb``.
  python benchmarks/bench_scale.py --end-to-end --sizes 1000000,2000000 [--store] [--tmp DIR]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ATTEMPTS_PER_LEARNER = 85  # of the default simulated course (measured: 9,400 learners -> about 800,000 attempts)
INGEST = r"""
import json, sys, time, resource
from research.store import open_warehouse
t0 = time.perf_counter()
with open_warehouse(sys.argv[2]) as wh:
    wh.ingest([sys.argv[1]], cohort="bench")
    n = wh.counts("bench")
print(json.dumps({"ingest_s": time.perf_counter() - t0, "attempts": n["attempts"], "attempt_kcs": n["attempt_kcs"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
FIT = r"""
import json, sys, time, resource
from research.store import open_warehouse
from research.estimate import opportunities
from research.estimate.afm import AFM
t0 = time.perf_counter()
with open_warehouse(sys.argv[1], read_only=True) as wh:
    attempts, kcs = wh.table("attempts", "bench"), wh.table("attempt_kcs", "bench")
read_s = time.perf_counter() - t0
frames_mb = (attempts.memory_usage(deep=True).sum() + kcs.memory_usage(deep=True).sum()) / 2**20
t0 = time.perf_counter()
steps = opportunities.student_steps(attempts, kcs)
steps_s = time.perf_counter() - t0
del attempts, kcs
model = sorted(steps["kc_model"].unique())[0]
t0 = time.perf_counter()
afm = AFM().fit(steps, kc_model=model)
print(json.dumps({"read_s": read_s, "student_steps_s": steps_s, "afm_s": time.perf_counter() - t0,
                  "frames_mb": frames_mb, "step_kc_rows": len(steps), "learners": int(steps["learner_id"].nunique()),
                  "kcs": len(afm.kcs_), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


SIMULATE = r"""
import json, sys, time
from research.simulate import simulate_cohort
t0 = time.perf_counter()
sim = simulate_cohort(n_learners=int(sys.argv[1]), seed=1, cohort="bench")
export = sim.write(sys.argv[2], formats=("datashop",))["datashop"]
print(json.dumps({"export": str(export), "simulated_attempts": len(sim.attempts), "simulate_s": time.perf_counter() - t0}))
"""


def measure(n_attempts: int, tmp: Path, *, store: bool = False) -> dict:
    sim = _child(SIMULATE, str(max(100, n_attempts // ATTEMPTS_PER_LEARNER)), str(tmp / f"raw-{n_attempts}"))  # its own process: the parent stays small
    export = sim.pop("export")
    out = {"target_attempts": n_attempts, **sim, "export_mb": Path(export).stat().st_size / 2**20}
    if store:  # the same ingest into a Parquet store (the cohort is checked out into an in-memory DuckDB)
        out["store_ingest"] = _child(INGEST, str(export), str(tmp / f"w-{n_attempts}.store"))
        shutil.rmtree(tmp / f"w-{n_attempts}.store")
    warehouse = tmp / f"w-{n_attempts}.duckdb"
    out["ingest"] = _child(INGEST, str(export), str(warehouse))
    out["warehouse_mb"] = warehouse.stat().st_size / 2**20
    os.unlink(export)
    out["fit"] = _child(FIT, str(warehouse))
    os.unlink(warehouse)
    return out


E2E_SIMULATE = r"""
import json, sys, time
from research.simulate import simulate_cohort
t0 = time.perf_counter()
sim = simulate_cohort(n_learners=int(sys.argv[1]), seed=1, cohort="bench")
files = sim.write(sys.argv[2], formats=("datashop",))
print(json.dumps({"files": [str(p) for k, p in files.items() if not k.endswith("_mapping")], "simulated_attempts": len(sim.attempts),
                  "learners": int(sim.attempts["learner_id"].nunique()), "simulate_s": time.perf_counter() - t0}))
"""
E2E_INGEST = r"""
import json, sys
from research.store import open_warehouse
with open_warehouse(sys.argv[1]) as wh:
    wh.ingest(json.loads(sys.argv[2]), cohort="bench")
    print(json.dumps(wh.counts("bench")))
"""
E2E_RUN = r"""
import sys
from research.cli import main
sys.exit(main(["run", "--cohort", "bench", "--warehouse", sys.argv[1], "--out", sys.argv[2], "--config-dir", sys.argv[3]]))
"""


def _staged(code: str, args: list[str], sampler_cls, first_stage: str) -> tuple[dict, list[str], int]:
    """Run ``code`` in a child process, sampling its process tree; a line ``COHORT: [i/n] NB ...`` starts a stage."""
    import re

    cpu0 = os.times()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = sampler_cls(proc.pid, interval=0.1)
    sampler.mark(first_stage)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        m = re.search(r"\[\d+/\d+\] (\S+)\.ipynb (\.\.\.|done in)", line)
        if m:
            sampler.mark(m.group(1) if m.group(2) == "..." else "report: render again, privacy check, publish")
    rc = proc.wait()
    sampler.stop()
    cpu1 = os.times()
    out = sampler.stage_mib()
    for late in [k for k in out if k.startswith("report:")]:
        out[late] = out.pop(late)  # the report's last steps come after every notebook
    out["_cpu_s"] = round(cpu1.children_user - cpu0.children_user + cpu1.children_system - cpu0.children_system, 1)
    return out, lines, rc


def end_to_end(n_attempts: int, tmp: Path, *, store: bool = False) -> dict:
    """One cohort end to end: simulate, ingest, ``research run`` at the notebooks' defaults; seconds and peak RSS per stage."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_cluster import TreeSampler

    learners = max(100, round(n_attempts / ATTEMPTS_PER_LEARNER))
    sim = _child(E2E_SIMULATE, str(learners), str(tmp / f"raw-{n_attempts}"))
    files = sim.pop("files")
    warehouse = tmp / (f"w-{n_attempts}.store" if store else f"w-{n_attempts}.duckdb")
    ingest, lines, rc = _staged(E2E_INGEST, [str(warehouse), json.dumps(files)], TreeSampler, "ingest")
    if rc:
        raise SystemExit("\n".join(lines[-30:]))
    counts = json.loads(lines[-1])
    (tmp / "config").mkdir(exist_ok=True)
    run, lines, rc = _staged(E2E_RUN, [str(warehouse), str(tmp / f"reports-{n_attempts}"), str(tmp / "config")], TreeSampler, "run: open, fingerprint")
    if rc:
        print("\n".join(lines[-40:]), file=sys.stderr)
    shutil.rmtree(tmp / f"raw-{n_attempts}", ignore_errors=True)
    return {"target_attempts": n_attempts, **sim, "attempts": counts["attempts"], "exit_code": rc, "warehouse": "store" if store else "file",
            "stages": {**{f"ingest{' (store)' if store else ''}": ingest["ingest"]}, **{k: v for k, v in run.items() if k != "_cpu_s"}},
            "ingest_cpu_s": ingest["_cpu_s"], "run_cpu_s": run["_cpu_s"]}


def _slopes(results: list[dict], limit_gb: float) -> None:
    """Per stage: seconds and peak MiB per million attempts and per thousand learners between the smallest and the largest size."""
    a, b = results[0], results[-1]
    da, dl = (b["attempts"] - a["attempts"]) / 1e6, (b["learners"] - a["learners"]) / 1e3
    print(f"\nslopes between {a['attempts']:,} and {b['attempts']:,} attempts ({a['learners']:,} and {b['learners']:,} learners; "
          f"the simulator keeps about {ATTEMPTS_PER_LEARNER} attempts per learner, so the two slopes are one measurement in two units)")
    print(f"{'stage':<46} | {'s / M att':>9} | {'MiB / M att':>11} | {'MiB / 1k lrn':>12} | {'reaches ' + format(limit_gb, 'g') + ' GB at (M att)':>24}")
    worst = []
    for stage in a["stages"]:
        if stage not in b["stages"]:
            continue
        sa, sb = a["stages"][stage], b["stages"][stage]
        ds, dm = sb["s"] - sa["s"], sb["tree"] - sa["tree"]
        slope = dm / da if da else float("nan")
        reach = b["attempts"] / 1e6 + (limit_gb * 1024 - sb["tree"]) / slope if slope > 0 else float("inf")
        worst.append((reach, stage))
        print(f"{stage:<46} | {ds / da:>9.1f} | {slope:>11,.0f} | {dm / dl:>12,.1f} | {reach:>24,.1f}")
    reach, stage = min(worst)
    print(f"\nfirst to reach {limit_gb:g} GB (straight line through the two sizes): {stage}, at about {reach:,.1f} million attempts "
          f"(about {reach * 1e6 / ATTEMPTS_PER_LEARNER:,.0f} learners)")


def main_end_to_end(argv: list[str]) -> int:
    sizes = [int(s) for s in (argv[argv.index("--sizes") + 1] if "--sizes" in argv else "1000000").split(",")]
    limit_gb = float(argv[argv.index("--limit-gb") + 1]) if "--limit-gb" in argv else 20.0
    os.environ.setdefault("RESEARCH_PSEUDONYM_KEY", "benchmark")
    results = []
    tmp_root = argv[argv.index("--tmp") + 1] if "--tmp" in argv else None
    with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
        for n in sizes:
            r = end_to_end(n, Path(tmp), store="--store" in argv)
            print(json.dumps(r), flush=True)
            results.append(r)
            print(f"\n{r['attempts']:,} attempts, {r['learners']:,} learners ({r['warehouse']}); run exit code {r['exit_code']}; "
                  f"CPU s: ingest {r['ingest_cpu_s']:,.0f}, run {r['run_cpu_s']:,.0f}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            print(f"{'stage':<46} | {'wall s':>7} | {'peak MiB, tree':>14} | {'largest process':>15}")
            for stage, v in r["stages"].items():
                print(f"{stage:<46} | {v['s']:>7.1f} | {v['tree']:>14,} | {v['largest_process']:>15,}")
            print(f"{'whole (ingest + run)':<46} | {sum(v['s'] for v in r['stages'].values()):>7.1f} | "
                  f"{max(v['tree'] for v in r['stages'].values()):>14,} | {max(v['largest_process'] for v in r['stages'].values()):>15,}")
            peak = max(v["tree"] for v in r["stages"].values())
            print(f"fits in {limit_gb:g} GB end to end: {'yes' if r['exit_code'] == 0 and peak <= limit_gb * 1024 else 'NO'} "
                  f"(peak {peak / 1024:.1f} GB, run exit code {r['exit_code']})", flush=True)
    if len(results) >= 2:
        _slopes(results, limit_gb)
    return 0


def main(argv: list[str]) -> int:
    if "--end-to-end" in argv:
        return main_end_to_end(argv)
    sizes = [int(s) for s in (argv[argv.index("--sizes") + 1] if "--sizes" in argv else "1000000,4000000").split(",")]
    limit_gb = float(argv[argv.index("--limit-gb") + 1]) if "--limit-gb" in argv else 20.0
    os.environ.setdefault("RESEARCH_PSEUDONYM_KEY", "benchmark")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, n in enumerate(sizes):
            r = measure(n, Path(tmp), store=i == 0 and "--no-store" not in argv)
            print(json.dumps(r), flush=True)
            results.append(r)
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (times are pessimistic when it is high)")
    print(f"{'attempts':>10} | {'export MB':>9} | {'ingest s':>8} | {'ingest peak MB':>14} | {'read+steps+AFM s':>16} | "
          f"{'fit peak MB':>11} | {'frames MB':>9} | {'step-KC rows':>12}")
    for r in results:
        i, f = r["ingest"], r["fit"]
        print(f"{i['attempts']:>10,} | {r['export_mb']:>9.0f} | {i['ingest_s']:>8.1f} | {i['peak_rss_mb']:>14,.0f} | "
              f"{f['read_s'] + f['student_steps_s'] + f['afm_s']:>16.1f} | {f['peak_rss_mb']:>11,.0f} | {f['frames_mb']:>9,.0f} | "
              f"{f['step_kc_rows']:>12,}")
    for r in results:
        if "store_ingest" in r:
            print(f"ingest of {r['store_ingest']['attempts']:,} attempts into a Parquet store: {r['store_ingest']['ingest_s']:.1f} s, "
                  f"peak {r['store_ingest']['peak_rss_mb']:,.0f} MB")
    if len(results) >= 2:
        (x0, r0), (x1, r1) = [(r["ingest"]["attempts"], r) for r in (results[0], results[-1])]
        for step in ("ingest", "fit"):
            y0, y1 = r0[step]["peak_rss_mb"], r1[step]["peak_rss_mb"]
            slope = (y1 - y0) / (x1 - x0)
            largest = x1 + (limit_gb * 1024 - y1) / slope if slope > 0 else float("inf")
            print(f"{step}: {slope * 1e6:,.0f} MB per million attempts above {y0 - slope * x0:,.0f} MB; "
                  f"extrapolated to a {limit_gb:g} GB peak at about {largest / 1e6:,.0f} million attempts")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
