"""The simulator's output for a given seed stays bit-identical (guards refactors of research.simulate).

If a change is meant to alter the simulated data, say so in the commit and update the digests.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pandas as pd

from research.simulate import simulate_cohort

DIGESTS = {
    "attempts": "b6ff374ff70101d093ac3a0f",
    "attempt_kcs": "55bbbbe6701f858e36f10386",
    "assessments": "55eb233e39dad9b4b85b6b89",
    "surveys": "7540753d3c335fa6dea3a7c8",
    "learners": "fd97ca926adfba5b838a31ee",
    "items": "dbde87201031143ab20c2c69",
}


def _digest(df: pd.DataFrame) -> str:
    h = hashlib.sha256(repr([(str(c), str(t)) for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
    return h.hexdigest()[:24]


def digests() -> dict[str, str]:
    sim = simulate_cohort(n_learners=60, seed=7, cohort="hash")
    return {f.name: _digest(getattr(sim, f.name)) for f in dataclasses.fields(sim)
            if isinstance(getattr(sim, f.name), pd.DataFrame)}


def test_simulated_tables_are_bit_identical_for_a_seed():
    assert digests() == DIGESTS
