"""What every recommendation rule is made of: the :class:`Rule` record, the tables rule
families read, and the column helpers the rule modules share (one copy, no import cycle:
:mod:`research.recommend.rules`, :mod:`~research.recommend.mastery_rules` and
:mod:`~research.recommend.survey_rules` all build on this module).

Interval levels: :func:`rule_context` turns the config's ``ci_level`` (the level of the
intervals findings carry) and ``estimates_ci_level`` (the level of the intervals in the
estimate tables, read back into standard errors) into their two-sided normal quantiles once
per run; rules take ``ctx["z"]`` and ``ctx["estimates_z"]`` from there and
:func:`interval` gives a finding's interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from research.analyses import N_

__all__ = ["FAMILY_TABLES", "N_", "Rule", "inputs_of", "interval", "normal_quantile", "num", "rule_context", "select",
           "text"]


#: the output table (data_schema/outputs/NAME.schema.json) each rule family reads
FAMILY_TABLES = {
    "items": "items",
    "distractors": "item_distractors",
    "kcs": "kcs",
    "dif": "dif",
    "funnel": "funnel",
    "time_on_task": "time_on_task",
    "mastery": "mastery",
    "survey_items": "survey_items",
}

@dataclass(frozen=True)
class Rule:
    name: str
    family: str
    target_type: str
    requires: tuple[str, ...]
    func: Callable[[pd.DataFrame, dict, dict], pd.DataFrame]
    title: str
    explanation: str
    action: str
    #: every column the rule reads -> its Table Schema type (the column contract)
    inputs: tuple[tuple[str, str], ...] = ()

    @property
    def table(self) -> str:
        """The output table whose schema declares the rule's input columns."""
        return FAMILY_TABLES[self.family]

    @property
    def columns(self) -> dict[str, str]:
        return dict(self.inputs)


def inputs_of(*parts: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The column contract of a rule: the union of column -> type maps, in order."""
    out: dict[str, str] = {}
    for p in parts:
        out.update(p)
    return tuple(out.items())


def num(df: pd.DataFrame, col: str) -> np.ndarray:
    """A column as floats (NaN where missing or not a number; all NaN when the column is absent)."""
    if col not in df.columns:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def text(df: pd.DataFrame, col: str) -> np.ndarray:
    """A column as Python objects (None where missing; all None when the column is absent)."""
    if col not in df.columns:
        return np.full(len(df), None, dtype=object)
    s = df[col].astype("object")
    return s.where(s.notna(), None).to_numpy(dtype=object)


def select(mask: np.ndarray, **cols) -> pd.DataFrame:
    """The rows of ``mask`` as a finding frame: arrays are filtered, scalars repeated."""
    out = {}
    for key, value in cols.items():
        if isinstance(value, np.ndarray) and value.shape[:1] == mask.shape:
            out[key] = value[mask]
        else:
            out[key] = [value] * int(mask.sum())
    return pd.DataFrame(out)


def normal_quantile(ci_level: float) -> float:
    """The two-sided normal quantile of a ``ci_level`` interval (1.959964 for 0.95)."""
    return float(stats.norm.ppf(0.5 + float(ci_level) / 2))


def rule_context(rules: dict, *, ci_level: float = 0.95, estimates_ci_level: float = 0.95) -> dict:
    """What every rule receives besides its table and settings (its ``ctx``), the quantiles computed once.

    ``rules`` are all rules' settings (a rule may look at another's); ``ci_level`` is the level of the
    intervals findings carry (``z`` its quantile); ``estimates_ci_level`` the level of the intervals in the
    estimate tables (``estimates_z``, to read a standard error back from a table's interval).
    """
    return {"rules": rules, "ci_level": float(ci_level), "z": normal_quantile(ci_level),
            "estimates_ci_level": float(estimates_ci_level), "estimates_z": normal_quantile(estimates_ci_level)}


def interval(estimate: np.ndarray, se: np.ndarray, ctx: dict, *, table: tuple | None = None,
             bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A finding's ``ci_low``, ``ci_high`` at the run's ``ci_level``.

    ``table`` is the estimate table's own (low, high): taken as it is when the table's level is the run's
    (so an asymmetric interval stays), else the normal ``estimate -/+ z se``; ``bounds`` clip it (0, 1 for a
    share).
    """
    if table is not None and ctx["ci_level"] == ctx["estimates_ci_level"]:
        return table
    with np.errstate(invalid="ignore"):
        lo, hi = estimate - ctx["z"] * se, estimate + ctx["z"] * se
    if bounds is not None:
        lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)
    return lo, hi
