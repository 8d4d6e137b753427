"""Benchmark of the learning-gain estimators against the issue's targets.

* classical path (learner scores, gains per module and group with intervals, attrition)
  for 8,000 learners in 20 modules: under 5 s;
* Bayesian hierarchical gain model for 8,000 learners in 20 modules: under 3 minutes on
  2 cores (compile included).

Run: .venv/bin/python benchmarks/bench_gains.py [--learners 8000] [--modules 20]
Timings on the shared development machine (2 cores, several engineers) are pessimistic.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
import warnings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learners", type=int, default=8000)
    ap.add_argument("--modules", type=int, default=20)
    ap.add_argument("--skip-bayes", action="store_true")
    ap.add_argument("--draws", type=int, default=500,
                    help="tuning steps and draws per chain; the model samples only ~25 scale parameters "
                         "(mean effects are integrated out), so 500 give ESS well above 100 per chain")
    args = ap.parse_args(argv)

    from research.bayes import SamplerSettings
    from research.estimate import gains as G
    from research.simulate.gains import simulate_prepost

    rows = []
    groups = ("employment officer", "specialist", "team lead")
    sim = simulate_prepost(args.learners, n_modules=args.modules, group_levels=groups, item_level=False, seed=1)
    sim_items = simulate_prepost(args.learners, n_modules=args.modules, group_levels=groups, item_level=True,
                                 max_score=10, seed=1)

    for label, s in (("totals", sim), ("item level, 10 items", sim_items)):
        def run():
            scores = G.learner_scores(s.assessments)
            G.summarise_scores(scores, s.learners, group="role", min_cell_size=10)
            G.attrition(scores, s.learners, group="role", min_cell_size=10)

        t = time.perf_counter()
        run()  # timed without tracemalloc, which slows pandas several-fold
        dt = time.perf_counter() - t
        tracemalloc.start()
        run()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        rows.append((f"classical path, {args.learners} learners x {args.modules} modules ({label}, "
                     f"{len(s.assessments):,} rows) [s]", dt, 5.0, dt < 5.0))
        rows.append((f"  peak Python memory of that path [MiB]", peak, float("nan"), True))

    if not args.skip_bayes:
        gains = G.gains_with_groups(G.learner_scores(sim.assessments), sim.learners, "role")
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = G.BayesianGainModel(SamplerSettings(draws=args.draws, tune=args.draws, chains=2, seed=1,
                                                        target_accept=0.95)).fit(gains, group="role")
        dt = time.perf_counter() - t
        post = model.summary()
        rows.append((f"Bayesian gain model, {len(gains):,} learner gains, {len(model.cells_)} cells, "
                     f"2 chains x {args.draws} tune + {args.draws} draws ({post.attrs['sampler_backend']}) [s]", dt, 180.0, dt < 180.0))
        rows.append(("  converged (R-hat <= 1.01, ESS >= 100/chain, no divergences)", float(post.attrs["converged"]),
                     1.0, bool(post.attrs["converged"])))
        truth = sim.truth["cell_gain"].rename(columns={"gain": "true"})
        cells = post[(post["module"] != "all") & (post["group"] != "all")].merge(truth, on=["module", "group"])
        cover = ((cells["ci_low"] <= cells["true"]) & (cells["true"] <= cells["ci_high"])).mean()
        rows.append(("  95% interval coverage of the true cell gains", cover, 0.95, cover >= 0.85))

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak resident memory of the process [MiB]", rss, float("nan"), True))
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}} | {'measured':>10} | {'target':>8} | ok")
    print("-" * (width + 30))
    for name, measured, target, ok in rows:
        print(f"{name:<{width}} | {measured:>10.3f} | {target:>8.3g} | {'yes' if ok else 'NO'}")
    print("\nTimings on the shared 2-core development machine are pessimistic.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
