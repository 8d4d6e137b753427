"""Small-cell suppression: no figure about a group smaller than the minimum cell size.

Primary suppression hides every cell whose count is below the minimum cell size ``k``.
Complementary suppression then protects it from subtraction: within a set of cells that
add up to a published total (the groups of one attribute), when any cell is hidden, the
next-smallest cells are hidden too until at least two cells are hidden and the hidden
cells together hold at least ``k`` learners. Then neither a single hidden cell nor a
hidden total below ``k`` can be worked out from the total and the visible cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from research.errors import ConfigError, DataError

PRIMARY = "primary"
COMPLEMENTARY = "complementary"
NOT_STATED = "(not stated)"


def check_min_cell_size(min_cell_size) -> int:
    if isinstance(min_cell_size, bool) or not isinstance(min_cell_size, (int, np.integer)) or min_cell_size < 1:
        raise ConfigError(f"min_cell_size={min_cell_size!r} must be a positive whole number (default 10)")
    return int(min_cell_size)


def suppression_mask(
    counts: pd.Series | Sequence[float], sets: pd.Series | Sequence | None = None, *, min_cell_size: int = 10
) -> pd.Series:
    """Which cells to hide: ``"primary"``, ``"complementary"`` or ``<NA>`` (shown), per cell.

    ``counts`` are the learners in each cell; ``sets`` labels the cells that add up to one
    published total (None: all cells form one set). Vectorised: one sort and group-wise
    cumulative sums, no loop over rows.
    """
    k = check_min_cell_size(min_cell_size)
    c = pd.Series(counts).reset_index(drop=True)
    if not pd.api.types.is_numeric_dtype(c):
        raise DataError(f"counts must be numbers, got dtype {c.dtype}")
    c = c.astype(float)
    if (c < 0).any():
        raise DataError(f"counts must not be negative, got {c[c < 0].iloc[0]}")
    s = pd.Series(["all"] * len(c) if sets is None else list(sets), dtype="object").fillna("(none)")
    frame = pd.DataFrame({"count": c.fillna(0.0), "set": s, "pos": np.arange(len(c))})
    frame = frame.sort_values(["set", "count", "pos"], kind="mergesort")
    grouped = frame.groupby("set", sort=False)["count"]
    frame["order"] = grouped.cumcount() + 1
    frame["cum_before"] = grouped.cumsum() - frame["count"]
    primary = frame["count"] < k
    frame["n_primary"] = primary.groupby(frame["set"]).transform("sum")
    # the smallest cells first: hide while the hidden ones are fewer than the primary ones,
    # fewer than two, or hold fewer than k learners together
    hide = (frame["n_primary"] > 0) & (
        (frame["order"] <= frame["n_primary"]) | (frame["order"] <= 2) | (frame["cum_before"] < k)
    )
    reason = pd.Series(pd.NA, index=frame.index, dtype="string")
    reason[hide & primary] = PRIMARY
    reason[hide & ~primary] = COMPLEMENTARY
    return reason.sort_index().reset_index(drop=True)


def group_sizes(
    learners: pd.DataFrame,
    attributes: Sequence[str] | None = None,
    *,
    learner: str = "learner_id",
    min_cell_size: int = 10,
) -> pd.DataFrame:
    """Learners per group of each attribute, with small groups suppressed.

    Missing values form their own group ``"(not stated)"`` so that the groups of an
    attribute always add up to the total.

    Returns
    -------
    DataFrame
        ``attribute``, ``group``, ``n`` (learners; empty when hidden), ``share`` (of all
        learners; empty when hidden), ``suppressed_reason`` (``primary``: below
        ``min_cell_size``; ``complementary``: hidden so that a small group cannot be
        derived by subtraction; empty when shown).
    """
    k = check_min_cell_size(min_cell_size)
    if learner not in learners.columns:
        raise DataError(f"learners has no column {learner!r}; columns: {list(learners.columns)}")
    if attributes is None:
        attributes = [c for c in learners.columns if c not in {learner, "cohort"}]
    missing = [a for a in attributes if a not in learners.columns]
    if missing:
        raise DataError(f"learners has no column(s) {missing}; columns: {list(learners.columns)}")
    per = learners.drop_duplicates(learner)
    total = len(per)
    if not attributes:
        return pd.DataFrame(columns=["attribute", "group", "n", "share", "suppressed_reason"])
    long = per[list(attributes)].astype("object").melt(var_name="attribute", value_name="group")
    long["group"] = long["group"].where(long["group"].notna(), NOT_STATED).astype(str)
    counts = long.groupby(["attribute", "group"], sort=True).size().rename("n").reset_index()
    counts["share"] = counts["n"] / total if total else np.nan
    reason = suppression_mask(counts["n"], counts["attribute"], min_cell_size=k)
    counts["suppressed_reason"] = reason.to_numpy()
    hidden = counts["suppressed_reason"].notna().to_numpy()
    counts["n"] = counts["n"].astype("Float64").mask(hidden)
    counts["share"] = counts["share"].astype("Float64").mask(hidden)
    counts["attribute"] = pd.Categorical(counts["attribute"], categories=list(attributes), ordered=True)
    return counts.sort_values(["attribute", "group"]).reset_index(drop=True).astype({"attribute": "string"})


#: evidence metrics that count learners (a count below k is itself a small group)
COUNT_METRICS = {"drop"}
EVIDENCE_BLOCKS = [
    ("estimate", "se", "ci_low", "ci_high", "n"),
    ("estimate_2", "se_2", "ci_low_2", "ci_high_2", "n_2"),
]


def suppress_records(records: pd.DataFrame, *, min_cell_size: int = 10) -> pd.DataFrame:
    """Hide the evidence of findings about fewer than ``min_cell_size`` learners.

    A finding's evidence figures (estimates, intervals, n) are emptied when its
    ``n_affected``, either ``n`` or a learner count used as evidence (learners who stop on a
    page) is below the minimum cell size; ``suppressed_reason`` says so. The finding
    itself stays in the list (its existence reveals no number).
    """
    k = check_min_cell_size(min_cell_size)
    out = records.copy()
    small = pd.Series(False, index=out.index)
    for col in ("n_affected", "n", "n_2"):
        if col in out.columns:
            small |= pd.to_numeric(out[col], errors="coerce").lt(k).fillna(False)
    for suffix, metric_col in (("", "metric"), ("_2", "metric_2")):
        if metric_col in out.columns:
            is_count = out[metric_col].astype("object").isin(COUNT_METRICS)
            small |= is_count & pd.to_numeric(out[f"estimate{suffix}"], errors="coerce").lt(k).fillna(False)
    if small.any():
        # confidence and reach too: with the priority they would give n_affected back
        cols = [c for block in EVIDENCE_BLOCKS for c in block if c in out.columns] + ["n_affected", "reach", "confidence"]
        for c in cols:
            if c in out.columns:
                out[c] = out[c].mask(small)
        reason = f"fewer than {k} learners (minimum cell size)"
        out["suppressed_reason"] = out.get("suppressed_reason", pd.Series(pd.NA, index=out.index)).astype("object")
        out.loc[small, "suppressed_reason"] = reason
        out["suppressed_reason"] = out["suppressed_reason"].astype("string")
    return out


PRIMARY_REASON = "fewer than {k} learners: suppressed to protect privacy"
COMPLEMENTARY_REASON = "hidden so that a group of fewer than {k} learners cannot be worked out from the total"


def protect_group_table(
    frame: pd.DataFrame,
    *,
    count: str,
    sets: Sequence[str],
    is_total: pd.Series | np.ndarray,
    keep: Sequence[str],
    min_cell_size: int = 10,
    reason: str = "suppressed_reason",
    subcounts: Sequence[str] = (),
) -> pd.DataFrame:
    """Primary and complementary suppression of a table of groups beside their total.

    The rows that are not totals (``is_total`` False) are cells of the sets given by the
    ``sets`` columns (for example module x attribute); each set's cells add up to a
    published total. Cells below ``min_cell_size`` learners (``count``; an already
    emptied count counts as 0) and, by :func:`suppression_mask`, the next-smallest cells
    of the same set are emptied: every column except ``keep`` (ids) and ``reason``
    becomes missing, and ``reason`` says why. ``subcounts`` are counts of parts of a cell
    (for example learners who dropped out): a row where one of them is above 0 and below
    the minimum cell size loses them and every figure derived from them (all columns but ``keep``,
    ``count`` and ``reason``).

    Returns a copy of ``frame``; rows keep their order.
    """
    k = check_min_cell_size(min_cell_size)
    out = frame.copy()
    integer_columns = [c for c in out.columns if pd.api.types.is_integer_dtype(out[c].dtype)]
    total = pd.array(np.asarray(is_total, dtype=object), dtype="boolean").fillna(False).to_numpy(dtype=bool)
    if reason not in out.columns:
        out[reason] = pd.Series(pd.NA, index=out.index, dtype="string")
    out[reason] = out[reason].astype("object")
    values = [c for c in out.columns if c not in set(keep) | {reason}]
    cells = out.loc[~total]
    if len(cells):
        set_key = cells[list(sets)].astype("object").astype(str).agg("\x1f".join, axis=1) if sets else None
        counts = pd.to_numeric(cells[count], errors="coerce").astype("Float64")
        mask = suppression_mask(counts.to_numpy(dtype=float, na_value=np.nan), None if set_key is None else set_key.to_numpy(), min_cell_size=k)
        mask.index = cells.index
        already = (out.loc[cells.index, reason].notna() & counts.isna()).fillna(False)
        primary = cells.index[mask.eq(PRIMARY).fillna(False).to_numpy(dtype=bool) & ~already.to_numpy(dtype=bool)]
        complementary = cells.index[mask.eq(COMPLEMENTARY).fillna(False).to_numpy(dtype=bool)]
        for idx, text in ((primary, PRIMARY_REASON), (complementary, COMPLEMENTARY_REASON)):
            if len(idx):
                out.loc[idx, values] = np.nan
                out.loc[idx, reason] = text.format(k=k)
    if subcounts:
        small = np.zeros(len(out), dtype=bool)
        for col in subcounts:
            part = pd.to_numeric(out[col], errors="coerce")
            small |= (part.lt(k) & part.gt(0)).fillna(False).to_numpy()
        derived = [c for c in values if c != count]
        if small.any():
            out.loc[small, derived] = np.nan
            out.loc[small & out[reason].isna().to_numpy(), reason] = (
                f"parts below {k} learners ({', '.join(subcounts)}): suppressed to protect privacy"
            )
    out[reason] = out[reason].astype("string")
    for c in integer_columns:
        out[c] = out[c].astype("Int64")
    return out


def not_suppressed(df: pd.DataFrame) -> np.ndarray:
    """Rows the estimate module did not suppress (``suppressed`` flag or ``suppressed_reason``)."""
    keep = np.ones(len(df), dtype=bool)
    if "suppressed" in df.columns:
        # a boolean flag in some tables, the reason for suppression in others (item_distractors)
        col = df["suppressed"]
        if pd.api.types.is_bool_dtype(col):
            flag = col.astype("boolean").fillna(False).to_numpy(dtype=bool)
        else:
            text = col.astype("object").where(col.notna(), "").astype(str).str.strip().str.lower()
            flag = ~text.isin(["", "false", "0", "nan", "none", "<na>"]).to_numpy(dtype=bool)
        keep &= ~flag
    if "suppressed_reason" in df.columns:
        reason = df["suppressed_reason"].astype("object")
        keep &= ~(reason.notna() & (reason.astype(str).str.len() > 0)).to_numpy(dtype=bool)
    return keep
