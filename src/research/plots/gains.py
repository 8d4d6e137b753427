"""Figures for learning gains and surveys. Each function returns ``(figure, alt_text)``.

Suppressed rows (groups below the minimum cell size) are never drawn; the alt text says
how many were left out. No global matplotlib state is changed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["gain_forest", "new_figure", "prepost_distributions", "survey_change"]


def new_figure(w=7.0, h=4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def prepost_distributions(scores: pd.DataFrame, *, max_panels: int = 12):
    """Histograms of pre- and post-test scores (proportion of maximum) per instrument.

    ``scores`` is :func:`research.estimate.gains.learner_scores` output (one row per learner
    and instrument; no individual is identifiable from a histogram of 10 bins).
    """
    insts = sorted(scores["instrument"].dropna().unique())[:max_panels]
    ncol = min(3, max(1, len(insts)))
    nrow = int(np.ceil(len(insts) / ncol)) if insts else 1
    fig = new_figure(3.2 * ncol, 2.6 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    bins = np.linspace(0, 1, 11)
    for ax, inst in zip(axes.ravel(), insts):
        sub = scores[scores["instrument"] == inst]
        for phase, colour in (("pre", "#9ecae1"), ("post", "#08519c")):
            col = f"{phase}_pct"
            if col in sub.columns:
                ax.hist(sub[col].dropna(), bins=bins, alpha=0.7, color=colour,
                        label=f"{phase} (n={int(sub[col].notna().sum())})")
        ax.set_title(str(inst), fontsize=9)
        ax.set_xlabel("score (share of maximum)")
        ax.set_ylabel("learners")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(insts):]:
        ax.set_visible(False)
    fig.suptitle("Pre- and post-test scores")
    means = []
    for inst in insts:
        sub = scores[scores["instrument"] == inst]
        if "pre_pct" in sub and "post_pct" in sub:
            means.append(f"{inst}: pre mean {sub['pre_pct'].mean():.0%}, post mean {sub['post_pct'].mean():.0%}")
    alt = ("Histograms of pre-test and post-test scores as a share of the maximum, one panel per test. "
           + "; ".join(means) + ".")
    return fig, alt


def gain_forest(summary: pd.DataFrame, *, measure: str = "gain", group_variable: str | None = None):
    """Dot-and-interval plot of the gain per module (and group) from ``gain_summary`` output.

    ``measure`` is ``gain`` (raw gain), ``g_class``, ``c_avg``, ``d_z`` or ``hedges_g``.
    Rows with a ``suppressed_reason`` are left out and counted in the alt text.
    """
    valid = ("gain", "g_class", "g_avg", "c_avg", "d_z", "hedges_g")
    if measure not in valid:
        from research.errors import ConfigError

        raise ConfigError(f"measure={measure!r} is not plotted; choose one of {list(valid)}")
    s = summary
    if group_variable is not None:
        s = s[s["group_variable"].isin(["all", group_variable])]
    n_supp = int(s["suppressed_reason"].notna().sum())
    s = s[s["suppressed_reason"].isna()].copy()
    s["label"] = np.where(s["group_variable"] == "all", s["module"].astype(str),
                          s["module"].astype(str) + " / " + s["group"].astype(str))
    s = s.iloc[::-1]
    fig = new_figure(7, max(2.5, 0.32 * len(s) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(s))
    est = s[measure].astype(float).to_numpy()
    lo = s[f"{measure}_ci_low"].astype(float).to_numpy()
    hi = s[f"{measure}_ci_high"].astype(float).to_numpy()
    colours = np.where(s["group_variable"] == "all", "#08519c", "#6baed6")
    ax.hlines(y, lo, hi, color=colours, lw=2)
    ax.scatter(est, y, color=colours, zorder=3)
    if "posterior_gain" in s.columns and measure == "gain" and s["posterior_gain"].notna().any():
        ax.scatter(s["posterior_gain"].astype(float), y + 0.2, marker="d", color="#d94801", s=18, zorder=3,
                   label="posterior mean (Bayesian)")
        ax.legend(fontsize=7, loc="lower right")
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, s["label"], fontsize=8)
    names = {"gain": "raw gain (share of maximum)", "g_class": "normalized gain of class averages",
             "g_avg": "average normalized gain", "c_avg": "normalized change c", "d_z": "Cohen's d_z",
             "hedges_g": "Hedges' g"}
    ax.set_xlabel(names[measure] + " with 95% interval")
    ax.set_title("Gain by module and group")
    order = s.sort_values(measure)
    alt = f"Dot plot of the {names[measure]} with 95% intervals for {len(s)} module and group rows."
    if len(order):
        low, high = order.iloc[0], order.iloc[-1]
        alt += (f" Lowest: {low['label']} ({float(low[measure]):.2f}); highest: {high['label']} "
                f"({float(high[measure]):.2f}).")
    if n_supp:
        alt += f" {n_supp} rows below the minimum cell size are not shown."
    return fig, alt


def survey_change(summary: pd.DataFrame):
    """Pre and post construct means with the change interval, from ``survey_summary`` output."""
    n_supp = int(summary["suppressed_reason"].notna().sum())
    s = summary[summary["suppressed_reason"].isna()]
    fig = new_figure(7, max(2.5, 0.5 * len(s) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(s))
    ax.scatter(s["pre_mean"].astype(float), y, color="#9ecae1", label="before (pre)", zorder=3)
    ax.scatter(s["post_mean"].astype(float), y, color="#08519c", label="after (post)", zorder=3)
    for yi, (a, b) in enumerate(zip(s["pre_mean"].astype(float), s["post_mean"].astype(float))):
        ax.annotate("", xy=(b, yi), xytext=(a, yi), arrowprops={"arrowstyle": "->", "color": "grey"})
    ax.set_yticks(y, s["construct"].astype(str))
    if len(s):
        ax.set_xlim(float(s["scale_min"].min()) - 0.1, float(s["scale_max"].max()) + 0.1)
    ax.set_xlabel("mean construct score (scale points)")
    ax.set_title("Survey constructs before and after")
    ax.legend(fontsize=8)
    parts = [f"{r.construct}: {float(r.pre_mean):.2f} to {float(r.post_mean):.2f} (change {float(r.change):+.2f}, "
             f"95% interval {float(r.change_ci_low):+.2f} to {float(r.change_ci_high):+.2f})" for r in s.itertuples()]
    alt = "Mean survey construct scores before and after the course. " + "; ".join(parts) + "."
    if n_supp:
        alt += f" {n_supp} constructs below the minimum cell size are not shown."
    return fig, alt
