"""Equity and engagement speed and memory at the design size: 8,000 learners.

Scenarios (each in a fresh child process, so its peak resident memory is its own):

* ``dif``: 8,000 learners x 100 items, complete first-attempt responses (800,000 rows),
  five learner attributes with 2 to 5 groups each (12 focal-vs-reference comparisons),
  Mantel-Haenszel + logistic-regression DIF for every item and comparison (1,200 rows),
  with and without purification. Target: under 30 s and 2 GB (logistic DIF with
  R's glm would be 3,600 model fits).
* ``engagement``: 8,000 learners walking a 4 x 5 x 5 = 100-item course with drop-out
  (about 0.5 million attempts): item and page funnels, completion, time on task by item
  and page. Target: under 20 s and 2 GB.
* ``gaps``: facility and completion by group for all five attributes. Target: under 5 s.

Recovery is reported beside the timing: planted DIF items found (class C) and clean
items flagged C; the funnel's reached counts against the simulated truth.

This machine is shared by several people and has 2 cores: timings are pessimistic.
Usage: .venv/bin/python benchmarks/bench_equity.py
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, pandas as pd
scenario = sys.argv[1]
rng = np.random.default_rng(7)
out = {}
if scenario in ("dif", "gaps"):
    from research.simulate.dif import simulate_dif
    sim = simulate_dif(8000, 100, dif_items=tuple(range(0, 100, 20)), dif_size=1.0, impact=-0.3, seed=3)
    learners = sim.learners.assign(
        age_band=rng.choice(["18-29", "30-39", "40-49", "50-59", "60+"], 8000),
        role=rng.choice(["officer", "specialist", "lead"], 8000, p=[0.6, 0.3, 0.1]),
        region=rng.choice(["North", "South", "East", "West"], 8000),
        digital_maturity=rng.choice(["low", "medium", "high"], 8000),
    )
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if scenario == "dif":
        from research.estimate.dif import mantel_haenszel_dif
        t0 = time.perf_counter()
        res = mantel_haenszel_dif(sim.responses, learners)
        out["dif_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res_p = mantel_haenszel_dif(sim.responses, learners, purify=True)
        out["dif_purified_s"] = time.perf_counter() - t0
        planted = set(sim.truth_items.loc[sim.truth_items["dif"], "item_id"])
        g = res_p[res_p["attribute"] == "gender"]
        out["planted_found"] = int(g[g["item_id"].isin(planted)]["ets_class"].eq("C").sum())
        out["planted"] = len(planted)
        out["clean_flagged_c"] = int(res_p[~((res_p["attribute"] == "gender") & res_p["item_id"].isin(planted))]["ets_class"].eq("C").sum())
        out["rows"] = len(res)
    else:
        from research.estimate.gaps import equity_gaps
        completion = pd.DataFrame({"learner_id": learners["learner_id"], "completed": rng.integers(0, 2, 8000)})
        t0 = time.perf_counter()
        res = equity_gaps(sim.responses, learners, completion=completion)
        out["gaps_s"] = time.perf_counter() - t0
        out["rows"] = len(res)
else:
    from research.simulate.dif import simulate_engagement
    from research.estimate.engagement import funnel, learner_completion, time_on_task
    sim = simulate_engagement(8000, 4, 5, 5, base_hazard=0.004, spikes={30: 0.2, 70: 0.15}, seed=3)
    out["attempts"] = len(sim.attempts)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    f = funnel(sim.attempts, sim.items)
    fp = funnel(sim.attempts, sim.items, level="page")
    comp = learner_completion(sim.attempts, sim.items)
    out["funnel_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ti = time_on_task(sim.attempts, sim.items)
    tp = time_on_task(sim.attempts, sim.items, level="page")
    out["time_s"] = time.perf_counter() - t0
    far = sim.furthest.to_numpy()
    out["funnel_exact"] = bool(np.array_equal(f["reached"].to_numpy(), [(far >= p).sum() for p in f["position"]]))
    out["top_drops"] = sorted(f.sort_values("rank_of_drop").head(2)["position"].tolist())
out["rss_before_mb"] = rss0
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run(scenario: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, scenario], capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"scenario {scenario} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    dif, eng, gap = run("dif"), run("engagement"), run("gaps")
    rows = [
        ("DIF 8,000 x 100 items, 12 comparisons (MH + logistic)", f"{dif['dif_s']:.1f} s", "< 30 s", dif["dif_s"] < 30),
        ("DIF same, purified", f"{dif['dif_purified_s']:.1f} s", "< 60 s", dif["dif_purified_s"] < 60),
        ("DIF peak memory (process)", f"{dif['peak_rss_mb']:.0f} MB", "< 2048 MB", dif["peak_rss_mb"] < 2048),
        ("DIF planted items class C", f"{dif['planted_found']}/{dif['planted']}", "all", dif["planted_found"] == dif["planted"]),
        ("DIF clean rows class C", f"{dif['clean_flagged_c']}/{dif['rows'] - dif['planted']}", "0", dif["clean_flagged_c"] == 0),
        (f"funnel item+page + completion, {eng['attempts']:,} attempts", f"{eng['funnel_s']:.1f} s", "< 10 s", eng["funnel_s"] < 10),
        ("time on task item+page", f"{eng['time_s']:.1f} s", "< 10 s", eng["time_s"] < 10),
        ("engagement peak memory (process)", f"{eng['peak_rss_mb']:.0f} MB", "< 2048 MB", eng["peak_rss_mb"] < 2048),
        ("funnel reached == truth; top drops at 30, 70", f"{eng['funnel_exact']}, {eng['top_drops']}", "True, [30, 70]",
         eng["funnel_exact"] and eng["top_drops"] == [30, 70]),
        ("gaps facility + completion, 5 attributes", f"{gap['gaps_s']:.2f} s", "< 5 s", gap["gaps_s"] < 5),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}} | measured | target | ok")
    for name, measured, target, ok in rows:
        print(f"{name:<{width}} | {measured} | {target} | {'yes' if ok else 'NO'}")
    print("(shared 2-core machine: timings are pessimistic)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
