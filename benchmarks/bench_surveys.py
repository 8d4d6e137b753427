"""Survey questions and waves: speed and memory at cohort scale.

Target (design: "a cohort of 8,000 learners must run end to end in minutes on a laptop"):
``survey_items``, ``survey_invariance`` and ``survey_waves`` for 8,000 learners x 3 waves x 11
questions (two constructs, attrition, learner groups) as notebook 04 runs them (the constructs'
models fitted once, ``fit_constructs``) in under 2 minutes together, peak memory under 2 GB;
issue 15 asks the whole of notebook 04 to take about 8 s. Also times the GRM alone (one
construct, all waves, with standard errors) and checks the planted problems are found at
this size. CPU seconds are printed beside wall seconds (the machine is shared).

This machine is shared by several people and has 2 cores: timings are pessimistic.
Usage: .venv/bin/python benchmarks/bench_surveys.py [n_learners]
"""

from __future__ import annotations

import resource
import sys
import time

from research.estimate import ordinal, survey_models
from research.recommend import load_config, recommend
from research.simulate.surveys import simulate_survey_waves


def main(n: int = 8000) -> None:
    sim = simulate_survey_waves(n, seed=11)
    print(f"{len(sim.surveys):,} answers of {n:,} learners in 3 waves")
    scored, _ = survey_models.clean_surveys(sim.surveys)
    sub = scored[scored["construct"] == "self_efficacy"]
    t = time.perf_counter()
    m = ordinal.OrdinalIRT("grm").fit(sub, group="phase", group_order=["pre", "mid", "post"])
    print(f"GRM, 8 questions, 3 waves with SEs: {time.perf_counter() - t:.1f} s (converged {m.converged_})")
    times = {}

    def timed(name, fn, *args, **kwargs):
        t, c = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        times[name] = (time.perf_counter() - t, time.process_time() - c)
        return out

    models = timed("fit_constructs", survey_models.fit_constructs, sim.surveys)
    items = timed("survey_items", survey_models.survey_items, sim.surveys, sim.learners, models=models)
    inv = timed("survey_invariance", survey_models.survey_invariance, sim.surveys, sim.learners, items=items)
    waves = timed("survey_waves", survey_models.survey_waves, sim.surveys, items=items, invariance=inv, models=models)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name, (wall, cpu) in times.items():
        print(f"{name}: {wall:.1f} s ({cpu:.1f} CPU s)")
    total = sum(w for w, _ in times.values())
    print(f"together {total:.1f} s, {sum(c for _, c in times.values()):.1f} CPU s (target < 120 s); "
          f"peak memory {peak:.0f} MB (target < 2048 MB)")
    w = waves[waves["construct"] == "self_efficacy"]
    th = sim.truth["theta"]
    who = sim.surveys[sim.surveys["construct"] == "self_efficacy"].groupby("phase")["learner_id"].unique()
    real = [th[p][[int(x[1:]) for x in who[p]]].mean() - th["pre"].mean() for p in ("pre", "mid", "post")]
    print("wave means (truth 0, 0.4, 0.8; in the drawn sample", ", ".join(f"{r:.3f}" for r in real) + "):",
          [f"{e:.3f} [{lo:.3f}, {hi:.3f}]" for e, lo, hi in zip(w["estimate"], w["ci_low"], w["ci_high"])])
    recs = recommend({"survey_items": items}, load_config())
    print("findings:", dict(zip(recs["rule"], recs["target_id"])), "planted:", sim.truth["planted"])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
