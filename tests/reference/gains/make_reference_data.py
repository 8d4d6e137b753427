"""Write the simulated data set that make_reference.R fits with lme4 (our own simulation,
no real data). Run from the project root: .venv/bin/python tests/reference/gains/make_reference_data.py"""

from research.estimate.gains import learner_gains, learner_scores
from research.simulate.gains import simulate_prepost

sim = simulate_prepost(150, n_modules=6, item_level=False, dropout=0.1, seed=11,
                       module_gain=[0.02, 0.08, 0.12, 0.18, 0.22, 0.30])
gains = learner_gains(learner_scores(sim.assessments)).merge(sim.learners, on=["cohort", "learner_id"])
gains[["learner_id", "module", "role", "pre_pct", "post_pct"]].to_csv(
    "tests/reference/gains/sim_mixed.csv", index=False, float_format="%.6f")
