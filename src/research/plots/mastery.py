"""Figures of knowledge tracing: student models compared on held-out learners, and practice per KC.

Every function returns a matplotlib Figure (no ``plt.show()``, no global style changes)
and has a companion ``*_alt`` function that writes the alt text for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research.plots import empty_figure

__all__ = ["plot_practice", "plot_student_models", "practice_alt", "student_models_alt"]

MODEL_LABELS = {"rasch": "Rasch", "afm": "AFM", "pfa": "PFA", "best_lr": "Best-LR", "bkt": "BKT"}


def plot_student_models(table: pd.DataFrame):
    """AUC and RMSE of each student model, mean over folds with +- 1 SD over folds."""
    if table is None or table.empty:
        return empty_figure("Student models", "No comparison: too few learners for the folds.")[0]
    import matplotlib.pyplot as plt

    t = table.sort_values("auc")
    labels = [MODEL_LABELS.get(m, m) for m in t["model"]]
    y = np.arange(len(t))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 0.45 * len(t) + 1.8), sharey=True)
    a1.errorbar(t["auc"], y, xerr=t["auc_sd"].fillna(0), fmt="o", color="tab:blue", capsize=3)
    a1.set_yticks(y, labels)
    a1.set_xlabel("AUC on held-out learners (higher is better)")
    a2.errorbar(t["rmse"], y, xerr=t["rmse_sd"].fillna(0), fmt="o", color="tab:orange", capsize=3)
    a2.set_xlabel("RMSE (lower is better)")
    folds = int(t["n_folds"].iloc[0]) if "n_folds" in t.columns and t["n_folds"].notna().any() else None
    fig.suptitle(f"Student models, learner-grouped {folds}-fold cross-validation" if folds else "Student models")
    fig.tight_layout()
    return fig


def student_models_alt(table: pd.DataFrame) -> str:
    if table is None or table.empty:
        return "No student-model comparison: too few learners for the folds."
    t = table.sort_values("auc", ascending=False)
    parts = ", ".join(f"{MODEL_LABELS.get(r.model, r.model)} {r.auc:.3f}" for r in t.itertuples())
    return (f"Student models ranked by AUC on held-out learners: {parts}. "
            "The right panel shows each model's RMSE; bars are one standard deviation over folds.")


def plot_practice(table: pd.DataFrame, *, top: int = 20):
    """Per KC: share of practice after mastery and share of learners who leave below mastery."""
    fit = table[(table["status"] == "fit")] if table is not None and not table.empty else pd.DataFrame()
    if fit.empty:
        return empty_figure("Practice and mastery", "No KC could be traced.")[0]
    import matplotlib.pyplot as plt

    t = fit.assign(_worst=fit[["over_practice_share", "under_practice_share"]].max(axis=1))
    t = t.sort_values("_worst", ascending=False).head(top).iloc[::-1]
    y = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(t) + 1.6))
    ax.barh(y - 0.2, t["over_practice_share"], height=0.4, color="tab:green", label="practice after mastery")
    ax.barh(y + 0.2, t["under_practice_share"], height=0.4, color="tab:red", label="learners who leave below mastery")
    ax.set_yticks(y, t["kc"].astype(str), fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.set_title("Over- and under-practice per KC (knowledge tracing)")
    fig.tight_layout()
    return fig


def practice_alt(table: pd.DataFrame, *, top: int = 20) -> str:
    fit = table[(table["status"] == "fit")] if table is not None and not table.empty else pd.DataFrame()
    if fit.empty:
        return "No KC could be traced, so there is no practice chart."
    over = fit.sort_values("over_practice_share", ascending=False).iloc[0]
    under = fit.sort_values("under_practice_share", ascending=False).iloc[0]
    return (f"Bars for up to {top} KCs: the share of practice after mastery and the share of learners who leave "
            f"the KC below mastery. Most over-practised: {over['kc']} ({over['over_practice_share']:.0%}); "
            f"most under-practised: {under['kc']} ({under['under_practice_share']:.0%}).")
