"""Figures of notebook 05: DIF, success curves by group, the completion funnel, group gaps.

Each function takes the tidy table of :mod:`research.estimate.dif`,
:mod:`research.estimate.engagement` or :mod:`research.estimate.gaps` and returns
``(figure, alt_text)``. Suppressed cells (groups below the minimum cell size) are never
drawn; the alt text says how many were left out. No global matplotlib state is changed.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from research.plots import empty_figure

__all__ = ["dif_deltas", "funnel_chart", "gaps_chart", "success_curves"]

_COLOURS = ["#4a6fa5", "#b5542c", "#5b8c5a", "#8e6c8a", "#c9a227", "#4f4f4f"]




def dif_deltas(dif: pd.DataFrame, *, attribute: str | None = None, focal_group: str | None = None,
               item: str = "item_id", max_items: int = 40, ci_level: float = 0.95):
    """MH D-DIF per item with its ``ci_level`` normal interval and the ETS A/B/C bands (|delta| 1 and 1.5).

    One attribute and focal group at a time (default the one with the most B/C items); items are
    sorted by delta, at most ``max_items`` of the largest |delta| shown.
    """
    rows = dif[dif["suppressed_reason"].fillna("") == ""]
    if attribute is not None:
        rows = rows[rows["attribute"] == attribute]
    if focal_group is not None:
        rows = rows[rows["focal_group"] == focal_group]
    if rows.empty:
        return empty_figure("Differential item functioning", "no comparison with enough learners to analyse")
    # default: the comparison with the most B/C items, then the largest |delta|
    score = rows.assign(_f=rows["ets_class"].isin(["B", "C"]), _d=rows["mh_delta"].abs()).groupby(
        ["attribute", "focal_group"], sort=False).agg(f=("_f", "sum"), d=("_d", "max"))
    attr, foc = score.sort_values(["f", "d"], ascending=False).index[0]
    rows = rows[(rows["attribute"] == attr) & (rows["focal_group"] == foc)]
    first = rows.iloc[0]
    rows = rows.reindex(rows["mh_delta"].abs().sort_values(ascending=False).index).head(max_items)
    rows = rows.sort_values("mh_delta")
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(rows) + 1)))
    y = np.arange(len(rows))
    for lo, hi, shade in ((-1.5, -1.0, 0.12), (1.0, 1.5, 0.12), (-10, -1.5, 0.22), (1.5, 10, 0.22)):
        ax.axvspan(lo, hi, color="#b5542c", alpha=shade, lw=0)
    colour = rows["ets_class"].map({"A": _COLOURS[0], "B": _COLOURS[4], "C": _COLOURS[1]}).fillna("grey")
    half = stats.norm.ppf(0.5 + ci_level / 2) * rows["mh_delta_se"].to_numpy(float)
    ax.errorbar(rows["mh_delta"], y, xerr=half, fmt="none", ecolor="grey", lw=1)
    ax.scatter(rows["mh_delta"], y, c=colour.tolist(), zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, rows[item].astype(str).tolist(), fontsize=7)
    lim = max(2.0, float(np.nanmax(np.abs(rows["mh_delta"]) + half)) + 0.2)
    ax.set_xlim(-lim, lim)
    ax.set_xlabel(f"MH D-DIF (negative: harder for {first['focal_group']})")
    ax.set_title(f"DIF by {first['attribute']}: {first['focal_group']} vs {first['reference_group']}")
    fig.tight_layout()
    counts = rows["ets_class"].value_counts()
    flagged = rows.loc[rows["ets_class"] == "C", item].astype(str).tolist()
    alt = (
        f"Dot plot of the Mantel-Haenszel DIF (ETS delta) of {len(rows)} items for {first['attribute']}, "
        f"{first['focal_group']} against {first['reference_group']}, with {ci_level:.0%} intervals and shaded ETS bands: "
        f"{int(counts.get('A', 0))} items class A, {int(counts.get('B', 0))} class B, {int(counts.get('C', 0))} class C"
        + (f" ({', '.join(flagged)})." if flagged else ".")
    )
    return fig, alt


def success_curves(curves: pd.DataFrame, *, item: str = "item_id", max_items: int = 6):
    """Share correct by total-score band, one line per group, one panel per item x attribute.

    ``curves`` is :func:`research.estimate.dif.dif_success_curves` or
    :func:`research.estimate.dif.flagged_success_curves`; suppressed cells are left out.
    """
    shown = curves[curves["suppressed_reason"].fillna("") == ""]
    panels = list(dict.fromkeys(zip(shown[item].astype(str), shown["attribute"].astype(str))))[:max_items]
    if not panels:
        return empty_figure("Success curves by group", "no flagged item with groups large enough to show")
    ncol = min(3, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(6.0, 3.4 * ncol), 2.8 * nrow + 0.4), squeeze=False, sharey=True)
    for ax, (it, attr) in zip(axes.flat, panels):
        d = shown[(shown[item].astype(str) == it) & (shown["attribute"] == attr)]
        for k, g in enumerate(sorted(d["group"].astype(str).unique())):
            dg = d[d["group"] == g].sort_values("band")
            x = (dg["score_low"] + dg["score_high"]) / 2
            c = _COLOURS[k % len(_COLOURS)]
            ax.plot(x, dg["estimate"], marker="o", color=c, label=g)
            ax.fill_between(x, dg["ci_low"], dg["ci_high"], color=c, alpha=0.15, lw=0)
        ax.set_title(f"{it} by {attr}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("total score")
        ax.legend(fontsize=7)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("share correct")
    fig.suptitle("Success on flagged items by group, at equal total score", fontsize=11)
    fig.tight_layout()
    left_out = int((curves["suppressed_reason"].fillna("") != "").sum())
    alt = (
        "Line charts, one per flagged item and attribute ("
        + ", ".join(f"{it} by {attr}" for it, attr in panels)
        + "), of the share of learners answering correctly at each band of total score, one line per group, "
        "with 95% bands. Where the lines separate at equal score, the item works differently for the groups."
        + (f" {left_out} cells below the minimum cell size are not shown." if left_out else "")
    )
    return fig, alt


def funnel_chart(funnel: pd.DataFrame, *, top: int = 3):
    """Share of the cohort reaching each position, the ``top`` biggest drops marked."""
    if funnel.empty:
        return empty_figure("Completion funnel", "no positions")
    level = str(funnel["level"].iloc[0])
    label = {"item": "item_id", "page": "page", "module": "module"}[level]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.step(funnel["position"], funnel["share"], where="post", color=_COLOURS[0])
    ax.fill_between(funnel["position"], funnel["share"], step="post", color=_COLOURS[0], alpha=0.15)
    worst = funnel.dropna(subset=["rank_of_drop", "drop", "share", "drop_share"]).sort_values("rank_of_drop").head(top)
    for k, r in enumerate(worst.itertuples()):
        # the drop shows as the step from this position to the next one
        ax.annotate(f"after {getattr(r, label)}: -{r.drop} ({r.hazard:.0%})", (r.position + 1, r.share - r.drop_share / 2),
                    xytext=(8, -14 * k), textcoords="offset points", fontsize=8, color=_COLOURS[1], va="center",
                    arrowprops=dict(arrowstyle="-", color=_COLOURS[1], lw=0.6))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"position in the course ({level})")
    ax.set_ylabel("share of cohort reaching it")
    ax.set_title("Completion funnel")
    fig.tight_layout()
    last = funnel.iloc[-1]
    alt = (
        f"Step chart of the share of the cohort ({'hidden number of' if pd.isna(last['n_cohort']) else int(last['n_cohort'])} "
        f"learners) reaching each of {len(funnel)} {level} positions; "
        + ("" if pd.isna(last["share"]) else f"{last['share']:.0%} reach the last one. ") + "Biggest drops: "
        + "; ".join(f"{getattr(r, label)} ({r.drop} learners stop, hazard {r.hazard:.0%})" for r in worst.itertuples())
        + "."
    )
    return fig, alt


def gaps_chart(gaps: pd.DataFrame):
    """Estimate and 95% interval per group, one panel per measure; suppressed groups listed."""
    shown = gaps[gaps["suppressed_reason"].fillna("") == ""]
    measures = list(dict.fromkeys(shown["measure"]))
    if not measures:
        return empty_figure("Gaps between groups", "every group is below the minimum cell size")
    fig, axes = plt.subplots(1, len(measures), figsize=(3.6 * len(measures), 0.3 * shown.groupby("measure").size().max() + 1.5),
                             squeeze=False)
    for ax, m in zip(axes[0], measures):
        d = shown[shown["measure"] == m].iloc[::-1]
        labels = [("cohort" if a == "all" else f"{a}: {g}") for a, g in zip(d["attribute"], d["group"])]
        y = np.arange(len(d))
        ax.errorbar(d["estimate"], y, xerr=[d["estimate"] - d["ci_low"], d["ci_high"] - d["estimate"]], fmt="o",
                    color=_COLOURS[0], ecolor="grey", ms=4)
        if d["target"].notna().any():
            ax.axvline(float(d["target"].dropna().iloc[0]), color=_COLOURS[1], ls="--", lw=1, label="target")
            ax.legend(fontsize=7)
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_title(m)
        ax.set_xlabel("estimate (95% interval)")
    fig.suptitle("Gaps between groups")
    fig.tight_layout()
    n_supp = int((gaps["suppressed_reason"].fillna("") != "").sum())
    widest = shown.dropna(subset=["difference"])
    widest = widest.reindex(widest["difference"].abs().sort_values(ascending=False).index).head(1)
    alt = f"Dot plots with 95% intervals of {', '.join(measures)} for the cohort and each learner group."
    if len(widest):
        w = widest.iloc[0]
        alt += (f" The largest difference from a reference group is {w['measure']} for {w['attribute']} "
                f"{w['group']} against {w['reference_group']}: {w['difference']:+.2f}.")
    if n_supp:
        alt += (f" {n_supp} group rows are not shown: groups below the minimum cell size, and groups hidden "
                "so that a small group cannot be worked out from the total.")
    return fig, alt
