"""Benchmark: recommendations and the HTML report for a large course (8,000 learners).

Builds estimate tables of the size a big cohort produces (600 items, 2,400 answer
options, 150 KCs, DIF on 5 attributes, 200 pages), times research.recommend.recommend and
research.report.write_report (one language, with every figure), and prints
``figure | measured | target | ok``. Timings on a shared, loaded machine are pessimistic.

    .venv/bin/python benchmarks/bench_report.py
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from research.recommend import recommend
from research.report import write_report

N_LEARNERS, N_ITEMS, N_KCS, N_PAGES = 8000, 600, 150, 200


def tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    item_ids = np.array([f"I{i:04d}" for i in range(N_ITEMS)])
    pages = np.array([f"P{p:03d}" for p in range(N_PAGES)])
    n = rng.integers(3000, N_LEARNERS, N_ITEMS)
    fac = np.clip(rng.beta(6, 3, N_ITEMS), 0.02, 0.99)
    half = 1.96 * np.sqrt(fac * (1 - fac) / n)
    items = pd.DataFrame({
        "item_id": item_ids, "module": [f"M{i // 150}" for i in range(N_ITEMS)], "page": pages[np.arange(N_ITEMS) % N_PAGES],
        "n_learners": n, "facility": fac, "facility_ci_low": fac - half, "facility_ci_high": fac + half,
        "discrimination": rng.normal(0.35, 0.12, N_ITEMS), "hint_rate": rng.beta(2, 12, N_ITEMS),
        "infit_mnsq": rng.normal(1, 0.1, N_ITEMS), "outfit_mnsq": rng.normal(1, 0.15, N_ITEMS),
        "infit_z": rng.normal(0, 1.2, N_ITEMS), "outfit_z": rng.normal(0, 1.5, N_ITEMS),
    })
    opts = np.tile(np.array(list("ABCD")), N_ITEMS)
    share = rng.dirichlet([6, 2, 1.5, 0.5], N_ITEMS).ravel()
    distractors = pd.DataFrame({
        "item_id": np.repeat(item_ids, 4), "option": opts, "is_key": np.tile([True, False, False, False], N_ITEMS),
        "n": np.round(share * np.repeat(n, 4)), "share": share, "mean_ability": rng.normal(0, 0.5, 4 * N_ITEMS),
    })
    kcs = pd.DataFrame({
        "kc_model": "Fine", "kc": [f"K{k:03d}" for k in range(N_KCS)], "intercept": rng.normal(0, 1, N_KCS),
        "slope": np.abs(rng.normal(0.2, 0.1, N_KCS)), "slope_se": 0.03, "n_obs": 20000, "n_learners": 7000,
        "category": rng.choice(["good", "good", "good", "no_learning", "still_high", "low_and_flat", "too_little_data"], N_KCS),
        "category_confidence": rng.uniform(0.4, 1, N_KCS), "first_error_rate": rng.uniform(0.2, 0.7, N_KCS),
        "last_error_rate": rng.uniform(0.05, 0.4, N_KCS), "last_opportunity": 8,
    })
    kcs["slope_ci_low"], kcs["slope_ci_high"] = kcs["slope"] - 0.06, kcs["slope"] + 0.06
    rows = N_ITEMS * 10
    delta = rng.normal(0, 0.5, rows)
    dif = pd.DataFrame({
        "item_id": np.repeat(item_ids, 10), "attribute": np.tile(np.repeat(["gender", "age_band", "role", "region", "digital_maturity"], 2), N_ITEMS),
        "reference_group": "ref", "focal_group": np.tile(["f1", "f2"], rows // 2), "n_reference": 3000, "n_focal": rng.integers(5, 3000, rows),
        "mh_delta": delta, "mh_delta_se": 0.3, "p_adjusted": rng.uniform(0, 1, rows),
        "ets_class": np.where(np.abs(delta) > 1.5, "C", np.where(np.abs(delta) > 1, "B", "A")), "suppressed_reason": None,
    })
    reached = np.sort(rng.integers(4000, N_LEARNERS, N_PAGES))[::-1].astype(float)
    drop = np.append(reached[:-1] - reached[1:], 0)
    funnel = pd.DataFrame({"position": np.arange(1, N_PAGES + 1), "level": "page", "module": "M", "page": pages,
                           "reached": reached, "drop": drop, "hazard": drop / reached, "n_cohort": N_LEARNERS})
    ratio = rng.lognormal(0, 0.4, N_PAGES)
    time_on_task = pd.DataFrame({"level": "page", "page": pages, "n": 5000, "median_s": 120 * ratio,
                                 "planned_duration_s": 120.0, "ratio_to_planned": ratio})
    return {"items": items, "distractors": distractors, "kcs": kcs, "dif": dif, "funnel": funnel, "time_on_task": time_on_task}


def main() -> int:
    est = tables()
    learners = pd.DataFrame({
        "learner_id": [f"l{i}" for i in range(N_LEARNERS)],
        "gender": np.random.default_rng(1).choice(["woman", "man", "other"], N_LEARNERS, p=[0.5, 0.499, 0.001]),
    })
    t0 = time.perf_counter()
    recs = recommend(est, cohort="bench", n_learners=N_LEARNERS)
    t_rec = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = write_report(recs, tmp, language="sv", learners=learners, estimates=est)
        t_rep = time.perf_counter() - t0
        size_mb = Path(paths["html"]).stat().st_size / 1e6
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        ("findings", f"{len(recs)}", "-", True),
        ("recommend() seconds", f"{t_rec:.2f}", "<= 2", t_rec <= 2),
        ("write_report() seconds (sv, figures for 60 targets)", f"{t_rep:.1f}", "<= 120", t_rep <= 120),
        ("report size MB", f"{size_mb:.1f}", "<= 20", size_mb <= 20),
        ("peak memory MB", f"{peak_mb:.0f}", "<= 1500", peak_mb <= 1500),
    ]
    print(f"bench_report: {N_LEARNERS} learners, {N_ITEMS} items, {N_KCS} KCs, {N_PAGES} pages "
          "(timings on a shared, loaded machine are pessimistic)")
    print("figure | measured | target | ok")
    for name, measured, target, ok in rows:
        print(f"{name} | {measured} | {target} | {'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
