"""Cohort comparison (research.loop) on two 8,000-learner cohorts.

Figures: the profile of one cohort (classical item statistics, Rasch, AFM per KC model,
funnels, recommendations), the comparison itself given both profiles (anchor linking,
Bayesian differences with 4,000 draws, verdicts, recommendation status) and the linking
of 500 items alone. Targets: a profile in under 120 s and a comparison in under 5 s on 2
cores (the 8,000-learner cohort has to run end to end in minutes), peak memory under
4 GB. Timings on the shared, loaded development machine are pessimistic.

Usage: python benchmarks/bench_loop.py [N_LEARNERS]   (default 8000)
"""

from __future__ import annotations

import resource
import sys
import time
import warnings

TARGETS = {"profile": 120.0, "compare": 5.0, "link": 0.5, "memory_mb": 4096.0}


def main(argv: list[str]) -> int:
    import numpy as np

    from research.loop import CohortComparison, changelog_for_followup, link_difficulties, profile_cohort
    from research.simulate import simulate_cohort, simulate_followup

    n = int(argv[0]) if argv else 8000
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    before = simulate_cohort(n_learners=n, seed=1, cohort="bench-1")
    after = simulate_followup(before, fixed=("too_easy", "miskeyed", "no_learning", "dropout"), seed=2, cohort="bench-2")
    print(f"simulated 2 x {n:,} learners ({len(before.attempts):,} + {len(after.attempts):,} attempts) "
          f"in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    pb = profile_cohort(before)
    t_profile = time.perf_counter() - t0
    pa = profile_cohort(after)
    doc = changelog_for_followup(before, after, claimed=("dif", "slow"), recommendations=pb.recommendations)
    t0 = time.perf_counter()
    cmp = CohortComparison().fit(pb, pa, doc)
    t_compare = time.perf_counter() - t0
    verdicts = cmp.targets().set_index("target_id")["target_verdict"].to_dict()
    print("verdicts:", verdicts)
    # linking alone: 500 items with their standard errors
    rng = np.random.default_rng(0)
    import pandas as pd

    b = pd.DataFrame({"item_id": [f"I{i}" for i in range(500)], "difficulty": rng.normal(size=500),
                      "difficulty_se": 0.1, "n": 1000})
    a = b.assign(difficulty=b["difficulty"] - 0.4 + rng.normal(0, 0.1, 500))
    t0 = time.perf_counter()
    L = link_difficulties(b, a, exclude=["I0", "I1"])
    t_link = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        (f"profile one cohort of {n:,} (s)", t_profile, TARGETS["profile"]),
        ("compare two profiled cohorts (s)", t_compare, TARGETS["compare"]),
        ("link 500 items (s)", t_link, TARGETS["link"]),
        ("peak memory (MB)", peak_mb, TARGETS["memory_mb"]),
    ]
    print(f"linking check: shift {L.shift:.3f} (true 0.4), {L.n_anchors} anchors")
    print(f"{'figure':<36} | {'measured':>10} | {'target':>8} | ok")
    for name, value, target in rows:
        print(f"{name:<36} | {value:>10.2f} | {target:>8.1f} | {'yes' if value <= target else 'NO'}")
    print("(timings on a shared, loaded 2-core machine are pessimistic)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
