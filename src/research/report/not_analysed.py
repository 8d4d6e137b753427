"""The report's section "What was not analysed, and why", from the run's ``analyses.csv``.

Each skipped analysis (and each that ran with a fallback) becomes one translated sentence:
the analysis name and the reason come from the catalogues of :mod:`research.analyses`
(message ids marked there with ``N_``), the numbers from the record.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd

from research.analyses import ANALYSES, REASONS, sentence

__all__ = ["not_analysed_items"]


def not_analysed_items(analyses: pd.DataFrame | None, gettext: Callable[[str], str], integer: Callable) -> dict:
    """``{"skipped": [sentence, ...], "adapted": [sentence, ...]}`` in the report's language, in run order."""
    out: dict[str, list[str]] = {"skipped": [], "adapted": []}
    if analyses is None or len(analyses) == 0:
        return out
    seen = set()
    for row in analyses.itertuples(index=False):
        if row.status not in out or row.reason not in REASONS or row.analysis not in ANALYSES:
            continue
        numbers = json.loads(row.numbers) if isinstance(row.numbers, str) and row.numbers else {}
        numbers = {k: integer(v) if isinstance(v, (int, float)) else v for k, v in numbers.items()}
        text = sentence(row.analysis, row.status, row.reason, numbers, gettext=gettext)
        text = text[:1].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            out[row.status].append(text)
    return out
