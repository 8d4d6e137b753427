"""Figures of notebook 07: did the redesign work?

Each function takes a table of :mod:`research.loop` and returns ``(figure, alt_text)``.
Suppressed rows (too few learners) are never drawn; the alt text says how many were left
out. No global matplotlib state is changed and nothing is shown.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from research.plots import empty_figure

__all__ = ["anchor_plot", "comparison_forest", "status_bars"]

VERDICT_COLOURS = {
    "improved": "#5b8c5a",
    "no_detectable_change": "#7f7f7f",
    "worse": "#b5542c",
    "changed": "#4a6fa5",
    "not_comparable": "#c9c9c9",
}
METRIC_LABELS = {
    "difficulty": "Difficulty (logits, linked scale)",
    "error_rate": "Error rate (first attempts)",
    "discrimination": "Discrimination (item-rest r)",
    "dropout": "Drop-out (share lost here)",
    "learning_rate": "Learning rate (AFM slope)",
    "dif": "DIF (MH D-DIF)",
}




def comparison_forest(comparison: pd.DataFrame, *, metrics: list[str] | None = None):
    """Change (after - before) of every changed item, KC and page with its interval,
    one panel per metric, coloured by verdict."""
    title = "Change after the redesign, with 95% intervals"
    c = comparison[comparison["difference"].notna()]
    n_left = int(len(comparison) - len(c))
    if metrics is not None:
        c = c[c["metric"].isin(metrics)]
    if c.empty:
        return empty_figure(title, "no changed item, KC or page with enough learners to compare")
    order = [m for m in METRIC_LABELS if m in set(c["metric"])]
    targets = list(dict.fromkeys(c["target_id"].astype(str)))
    fig, axes = plt.subplots(1, len(order), figsize=(3.2 * len(order) + 1.5, max(2.4, 0.35 * len(targets) + 1.2)),
                             sharey=True, squeeze=False)
    y_of = {t: i for i, t in enumerate(targets)}
    for ax, metric in zip(axes[0], order):
        rows = c[c["metric"] == metric]
        y = rows["target_id"].astype(str).map(y_of).to_numpy(float)
        colours = rows["verdict"].astype(str).map(VERDICT_COLOURS).fillna("grey").tolist()
        d = rows["difference"].to_numpy(float)
        lo, hi = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
        ax.hlines(y, lo, hi, colors=colours, lw=2)
        ax.scatter(d, y, c=colours, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.set_xlabel("after - before")
    axes[0][0].set_yticks(range(len(targets)), targets, fontsize=8)
    axes[0][0].invert_yaxis()
    axes[0][0].set_ylabel("changed item, KC or page")
    handles = [plt.Line2D([], [], marker="o", ls="", color=col, label=v.replace("_", " "))
               for v, col in VERDICT_COLOURS.items() if v in set(c["verdict"].astype(str))]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    counts = c.drop_duplicates(["target_type", "target_id", "kc_model"])["target_verdict"].astype(str).value_counts()
    summary = ", ".join(f"{n} {v.replace('_', ' ')}" for v, n in counts.items())
    alt = (f"{title}. One panel per measure ({', '.join(METRIC_LABELS.get(m, m) for m in order)}); each row is a "
           f"changed item, KC or page with the change from the earlier to the later cohort and its interval. "
           f"Targets: {summary}.")
    if n_left:
        alt += f" {n_left} row(s) without a comparable value are not drawn."
    return fig, alt


def anchor_plot(anchors: pd.DataFrame, linking=None):
    """Anchor items: difficulty in the earlier cohort against the later cohort's linked
    difficulty, with the identity line; drifted anchors marked."""
    title = "Anchor items on the common scale"
    a = anchors[anchors["difficulty_before"].notna() & anchors["difficulty_after_linked"].notna()]
    if a.empty:
        return empty_figure(title, "no anchor items: the two cohorts could not be put on one scale")
    fig, ax = plt.subplots(figsize=(5, 5))
    used = a["used"].astype(bool).to_numpy()
    ax.scatter(a.loc[used, "difficulty_before"], a.loc[used, "difficulty_after_linked"], color="#4a6fa5",
               label="anchor used", s=18)
    if (~used).any():
        ax.scatter(a.loc[~used, "difficulty_before"], a.loc[~used, "difficulty_after_linked"], color="#b5542c",
                   marker="x", label="drifted (not used)", s=40)
    lim = [float(np.nanmin(a[["difficulty_before", "difficulty_after_linked"]].to_numpy())) - 0.3,
           float(np.nanmax(a[["difficulty_before", "difficulty_after_linked"]].to_numpy())) + 0.3]
    ax.plot(lim, lim, color="black", lw=0.8)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("difficulty, earlier cohort (logits)")
    ax.set_ylabel("difficulty, later cohort, linked (logits)")
    shift_txt = ""
    if linking is not None and np.isfinite(linking.shift):
        shift_txt = (f"ability shift {linking.shift:+.2f} logits (95% {linking.ci_low:+.2f} to {linking.ci_high:+.2f}), "
                     f"{linking.n_anchors} anchors" + (" - TOO FEW" if linking.too_few_anchors else ""))
        ax.set_title(f"{title}\n{shift_txt}", fontsize=10)
    else:
        ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    alt = (f"{title}: {int(used.sum())} anchor items used and {int((~used).sum())} dropped for drift; each point is an "
           "item unchanged between the cohorts, its difficulty in the earlier cohort against its linked difficulty "
           "in the later one; points near the diagonal mean the link holds.")
    if shift_txt:
        alt += f" Linking: {shift_txt}."
    return fig, alt


def status_bars(status: pd.DataFrame):
    """Findings of the two cohorts by rule family: resolved, persisting, new."""
    title = "Recommendations across the two cohorts"
    if status.empty:
        return empty_figure(title, "neither cohort has findings")
    order = ["resolved", "persisting", "new"]
    colours = {"resolved": "#5b8c5a", "persisting": "#c9a227", "new": "#b5542c"}
    tab = pd.crosstab(status["family"].astype(str), status["status"].astype(str)).reindex(columns=order, fill_value=0)
    fig, ax = plt.subplots(figsize=(6.5, max(2.2, 0.45 * len(tab) + 1)))
    left = np.zeros(len(tab))
    for s in order:
        ax.barh(tab.index, tab[s], left=left, color=colours[s], label=s)
        left += tab[s].to_numpy()
    ax.set_xlabel("findings")
    ax.set_ylabel("rule family")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8, ncol=3, loc="lower right")
    fig.tight_layout()
    totals = status["status"].astype(str).value_counts()
    alt = f"{title}: " + ", ".join(f"{int(totals.get(s, 0))} {s}" for s in order) + \
        "; bars by rule family (items, distractors, KCs, DIF, funnel, time on task)."
    return fig, alt
