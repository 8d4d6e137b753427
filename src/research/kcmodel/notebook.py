"""The KC-model search in notebook 03: a guarded step, its figures and what it adds to the KC findings.

:func:`kc_search` runs :func:`research.kcmodel.search.search` from the best KC model of the
cohort for a fixed number of steps (a notebook parameter), so the same data give the same
search on any machine; a time limit only guards against a cohort too large for the notebook,
and when it stops the search the record of analyses says so. It writes ``kc_search.csv`` and
records the analysis; it skips with a plain sentence when the attempts have no KC tags
or the cohort has too few learners. :func:`kc_search_figures` draws the BIC path and,
for each change of the chosen model, the learning curves of the KC before and after.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research.analyses import is_skipped, n_learners
from research.errors import DataError

__all__ = ["kc_advice", "kc_search", "kc_search_figures", "kc_search_view", "split_curves"]

DATA_ERRORS = (DataError, ValueError, ZeroDivisionError, np.linalg.LinAlgError, FloatingPointError)


def kc_search(ctx, steps, fitted, *, max_steps: int = 1, budget_s: float | None = 60.0, min_learners: int = 50,
              seed: int = 0):
    """Search for a better KC model than the cohort's best (``kc_search.csv``), or skip with the reason.

    ``max_steps`` bounds the search by its work, so its result does not depend on the machine;
    ``budget_s`` is a time limit in seconds (None: none) that, when it stops the search first, is
    recorded as an adapted run (``search_time_limit``): a longer run may find more.
    """
    if is_skipped(steps) or is_skipped(fitted):
        return ctx.skip("kc_search", "no_attempts") if is_skipped(steps) else ctx.skip(
            "kc_search", "estimate_failed", detail="the KC models could not be fitted")
    if steps.attrs.get("one_kc_per_item"):
        return ctx.skip("kc_search", "no_kc_tags")
    n = n_learners(steps)
    if n < min_learners:
        return ctx.skip("kc_search", "too_few_learners_total", n_learners=n, needed=min_learners)
    from research.kcmodel.search import search

    items = ctx.data.items if hasattr(ctx.data, "items") else None
    try:
        result = search(steps, kc_model=fitted.best, items=items, budget_s=budget_s, max_steps=max_steps, seed=seed)
    except DATA_ERRORS as exc:
        return ctx.skip("kc_search", "estimate_failed", detail=f"{type(exc).__name__}: {exc}")
    ctx.write_table(result.path, "kc_search")
    if result.stopped == "budget":
        ctx.ran("kc_search", "search_time_limit", seconds=budget_s, max_steps=max_steps)
    else:
        ctx.ran("kc_search")
    return result


def kc_search_view(result):
    """The search path as the notebook shows it."""
    if is_skipped(result):
        return result
    cols = ["step", "operator", "kcs", "n_kcs", "bic", "aic", "cv_rmse", "cv_log_loss", "n_candidates", "chosen",
            "explanation"]
    return result.path[cols]


def _curve(frame: pd.DataFrame, min_learners: int) -> pd.DataFrame:
    """Observed error rate by opportunity of a (learner, step_row, success) frame of one KC."""
    f = frame.sort_values(["learner_id", "step_row"], kind="stable")
    f = f.assign(opportunity=f.groupby("learner_id", sort=False).cumcount() + 1)
    g = f.groupby("opportunity").agg(error_rate=("success", lambda s: 1 - s.mean()), n=("learner_id", "nunique"))
    return g[g["n"] >= min_learners].reset_index()


def split_curves(result, steps, *, min_learners: int = 10) -> pd.DataFrame:
    """Error-rate curves of each changed KC before (start model) and after (chosen model).

    One row per kc_before x curve x opportunity: kc_before, curve (the KC itself or a new KC),
    when (``before``/``after``), opportunity, error_rate, n (learners, at least ``min_learners``).
    """
    out = []
    start = steps[steps["kc_model"] == result.start_model] if "kc_model" in steps.columns else steps
    rows = start.drop_duplicates("step_row")[["step_row", "learner_id", "item_id", "step_id", "success"]]
    row_keys = None  # (item, step) of each row, built on first use
    best = result.best
    for c in result.changes:
        if c.operator not in ("split", "split_items"):
            continue
        k = c.kcs[0]
        before = start[start["kc"] == k].drop_duplicates("step_row")
        cb = _curve(before, min_learners).assign(kc_before=k, curve=k, when="before")
        out.append(cb)
        for nk in c.new:
            # the new KC, also after later changes of it (a further split, or a merge with another KC)
            mine = best[best["kc"].astype(str).map(
                lambda kc: any(p == nk or p.startswith(nk + " ") for p in kc.split(" + ")))]
            if mine.empty:
                continue
            if row_keys is None:
                row_keys = pd.MultiIndex.from_arrays([rows["item_id"].astype(str), rows["step_id"].astype(str)])
            keys = pd.MultiIndex.from_arrays([mine["item_id"].astype(str), mine["step_id"].astype(str)])
            sel = rows[row_keys.isin(keys)]
            sel = sel[sel["step_row"].isin(before["step_row"])]
            out.append(_curve(sel, min_learners).assign(kc_before=k, curve=nk, when="after"))
    cols = ["kc_before", "curve", "when", "opportunity", "error_rate", "n"]
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def kc_search_figures(ctx, result, steps, *, max_kcs: int = 4):
    """The BIC path, and the curves before and after for the changed KCs (saved to figures/)."""
    if is_skipped(result):
        return result
    import matplotlib.pyplot as plt

    from research.names import plain_text_figures

    plain_text_figures()
    p = result.path
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(p["step"], p["bic"], marker="o", color="#1f5f99", label="BIC")
    ch = p[p["chosen"]]
    ax.scatter(ch["step"], ch["bic"], s=140, facecolors="none", edgecolors="#c0392b", linewidths=2, label="chosen")
    ax.set_xlabel("step of the search")
    ax.set_ylabel("BIC (lower is better)")
    ax2 = ax.twinx()
    ax2.plot(p["step"], p["cv_log_loss"], marker="s", ls="--", color="#7f7f7f", label="CV log-loss")
    ax2.set_ylabel("CV log-loss (learners held out)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"Search from KC model {result.start_model}")
    fig.tight_layout()
    alt = (f"BIC of the KC model at each of {len(p) - 1} steps of the search from {result.start_model}: from "
           f"{p['bic'].iloc[0]:.0f} to {p['bic'].min():.0f}; the chosen model is step {result.best_step}, "
           f"CV log-loss {p.loc[p['chosen'], 'cv_log_loss'].iloc[0]:.4f} against {p['cv_log_loss'].iloc[0]:.4f} at the start.")
    ctx.save_figure(fig, "kc_search_path", alt=alt)
    curves = split_curves(result, steps, min_learners=max(10, ctx.min_cell_size))
    kcs = list(dict.fromkeys(curves["kc_before"]))[:max_kcs]
    if not kcs:
        return p
    fig, axes = plt.subplots(1, len(kcs), figsize=(3.6 * len(kcs), 3.0), squeeze=False, sharey=True)
    for ax, k in zip(axes[0], kcs):
        c = curves[curves["kc_before"] == k]
        for (name, when), g in c.groupby(["curve", "when"], sort=False):
            ax.plot(g["opportunity"], g["error_rate"], marker="o", ls="-" if when == "after" else ":",
                    color="#7f7f7f" if when == "before" else None, label=f"{name} ({when})")
        ax.set_title(str(k), fontsize=9)
        ax.set_xlabel("opportunity")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("error rate")
    fig.tight_layout()
    ctx.save_figure(fig, "kc_search_splits",
                    alt=f"Error rate by opportunity of the KCs {', '.join(map(str, kcs))} before the search changed "
                        "them (dotted) and of the KCs they became (solid).")
    return curves


def kc_advice(result, curves_result, *, language: str = "en") -> pd.DataFrame:
    """KCs whose curve says "no learning" or "still hard" and the change the search supports, in words."""
    if is_skipped(result) or is_skipped(curves_result) or not result.changes:
        return pd.DataFrame(columns=["kc", "category", "supported_change"])
    from research.kcmodel.search import explain

    kt = curves_result.kc_table
    kt = kt[(kt["kc_model"] == result.start_model) & kt["category"].isin(["no_learning", "still_high"])]
    texts = dict(zip(result.explanations["kc"], explain(result.explanations, language)))
    rows = [{"kc": k, "category": cat, "supported_change": texts[k]} for k, cat in zip(kt["kc"], kt["category"])
            if k in texts]
    return pd.DataFrame(rows, columns=["kc", "category", "supported_change"])
