"""Write the simulated Likert set that make_survey_reference.R analyses with psych and
ordinal (our own simulation, no real data). Run from the project root:
.venv/bin/python tests/reference/gains/make_survey_data.py"""

from research.estimate.surveys import scored_responses
from research.simulate.gains import simulate_likert

sim = simulate_likert(250, constructs={"self_efficacy": 6}, shift={"self_efficacy": 0.5}, seed=7)
scored = scored_responses(sim.surveys)
scored[["learner_id", "phase", "item_id", "score"]].to_csv("tests/reference/gains/sim_likert.csv", index=False)
