"""Synthetic cohorts with known ground truth (demo, tests, parameter recovery).

:func:`simulate_cohort` builds a realistic cohort of an online course (AFM learning,
retries and hints, drop-out, pre/post tests, a Likert survey, and six planted problems)
and :meth:`SimulatedCohort.write` writes it as the raw exports our ingest adapters read
(DataShop transactions, xAPI, export-like CSV files with mappings).
:func:`simulate_followup` gives the next cohort of the same course after a redesign.

Topic generators of other modules (``research.simulate.irt`` ...) are imported by name
where they are used; this package does not import them.
"""

from research.simulate.cohort import PLANTED, SimulatedCohort, Truth, simulate_cohort, simulate_followup
from research.simulate.exports import FORMATS, write_exports

__all__ = ["FORMATS", "PLANTED", "SimulatedCohort", "Truth", "simulate_cohort", "simulate_followup", "write_exports"]
