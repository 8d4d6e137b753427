"""Figures of notebook 02 (item analysis): facility vs discrimination, Wright map, ICCs, diagnostics.

Each function takes tidy tables from :mod:`research.estimate.classical` /
:mod:`research.estimate.irt` and returns ``(figure, alt_text)``. No global matplotlib state
is changed and nothing is shown.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from research.estimate.classical import ItemThresholds
from research.plots import empty_figure

__all__ = ["convergence_diagnostics", "facility_discrimination", "item_characteristic_curves", "wright_map"]

_BLUE, _RED, _GREY, _GOLD = "#4a6fa5", "#b5542c", "#8a8a8a", "#c9a227"




def facility_discrimination(table: pd.DataFrame, thresholds: ItemThresholds | None = None, *, label_top: int = 8):
    """Scatter of facility (x) against item-rest discrimination (y), with the flag thresholds.

    Flagged items are red and the ``label_top`` items of most concern are labelled; items
    with too few learners are hollow grey.
    """
    th = thresholds or ItemThresholds()
    t = table.dropna(subset=["facility", "discrimination"])
    title = "Item facility and discrimination"
    if t.empty:
        return empty_figure(title, "no item has both a facility and a discrimination")
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.axvspan(0, th.too_hard, color=_RED, alpha=0.08, lw=0)
    ax.axvspan(th.too_easy, 1, color=_RED, alpha=0.08, lw=0)
    ax.axhspan(-1, th.low_discrimination, color=_RED, alpha=0.08, lw=0)
    low_n = t["low_n"].astype(bool) if "low_n" in t.columns else pd.Series(False, index=t.index)
    flagged = t["flags"].fillna("").ne("") & ~low_n if "flags" in t.columns else pd.Series(False, index=t.index)
    ok = ~flagged & ~low_n
    ax.scatter(t.loc[ok, "facility"], t.loc[ok, "discrimination"], color=_BLUE, s=28, label="no flag")
    ax.scatter(t.loc[flagged, "facility"], t.loc[flagged, "discrimination"], color=_RED, s=34, label="flagged")
    ax.scatter(t.loc[low_n, "facility"], t.loc[low_n, "discrimination"], facecolors="none", edgecolors=_GREY, s=28,
               label="too few learners")
    top = t[flagged].sort_values("concern", ascending=False).head(label_top) if "concern" in t.columns else t.head(0)
    for r in top.itertuples():
        ax.annotate(str(r.item_id), (r.facility, r.discrimination), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlim(0, 1)
    ymin = min(-0.1, float(t["discrimination"].min()) - 0.05)
    ax.set_ylim(ymin, max(0.8, float(t["discrimination"].max()) + 0.05))
    ax.set_xlabel("Facility (share correct on the first attempt)")
    ax.set_ylabel("Discrimination (item-rest correlation)")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False, ncol=3)
    fig.tight_layout()
    n_flag = int(flagged.sum())
    alt = (
        f"{title}: scatter plot of {len(t)} items, facility from {t['facility'].min():.2f} to {t['facility'].max():.2f}, "
        f"discrimination from {t['discrimination'].min():.2f} to {t['discrimination'].max():.2f}. "
        f"Shaded bands mark facility below {th.too_hard} or above {th.too_easy} and discrimination below "
        f"{th.low_discrimination}. {n_flag} item(s) flagged"
        + (f", most concerning: {', '.join(map(str, top['item_id']))}." if n_flag else ".")
    )
    return fig, alt


def wright_map(abilities: pd.DataFrame, items: pd.DataFrame, *, ability: str = "theta", max_labels: int = 40):
    """Person-item map: the histogram of learner abilities beside the item difficulties on one logit scale."""
    title = "Person-item (Wright) map"
    th = abilities[ability].dropna().to_numpy(float)
    it = items.dropna(subset=["difficulty"]).sort_values("difficulty")
    if len(th) == 0 or it.empty:
        return empty_figure(title, "no fitted abilities or difficulties")
    lo = float(min(th.min(), it["difficulty"].min())) - 0.3
    hi = float(max(th.max(), it["difficulty"].max())) + 0.3
    fig, (ax_p, ax_i) = plt.subplots(1, 2, sharey=True, figsize=(7, 6), gridspec_kw={"width_ratios": [1, 1]})
    bins = np.linspace(lo, hi, 40)
    ax_p.hist(th, bins=bins, orientation="horizontal", color=_BLUE)
    ax_p.invert_xaxis()
    ax_p.set_xlabel("Learners")
    ax_p.set_ylabel("Logits (ability / difficulty)")
    ax_p.set_title("Learners")
    ax_i.scatter(np.zeros(len(it)), it["difficulty"], marker="_", s=200, color=_RED)
    shown = it if len(it) <= max_labels else it.iloc[np.linspace(0, len(it) - 1, max_labels).astype(int)]
    for k, r in enumerate(shown.itertuples()):
        ax_i.annotate(str(r.item_id), (0, r.difficulty), xytext=(8 + 40 * (k % 3), 0), textcoords="offset points",
                      fontsize=7, va="center")
    ax_i.set_xlim(-0.2, 1.5)
    ax_i.set_xticks([])
    ax_i.set_title("Items")
    ax_p.set_ylim(lo, hi)
    fig.suptitle(title)
    fig.tight_layout()
    below = float((it["difficulty"].to_numpy()[:, None] > th[None, :]).mean())
    alt = (
        f"{title}: learner abilities range from {th.min():.1f} to {th.max():.1f} logits (median {np.median(th):.1f}); "
        f"{len(it)} item difficulties range from {it['difficulty'].min():.1f} ({it['item_id'].iloc[0]}) to "
        f"{it['difficulty'].max():.1f} ({it['item_id'].iloc[-1]}). On average an item is harder than "
        f"{100 * below:.0f}% of the learners."
    )
    return fig, alt


def item_characteristic_curves(icc: pd.DataFrame, *, abilities: pd.DataFrame | None = None,
                               responses: pd.DataFrame | None = None, n_groups: int = 8):
    """Model ICCs of some items; with abilities and responses, the observed share correct per ability group.

    ``icc`` is the output of ``model.icc(items=...)``; ``abilities`` has learner_id and theta;
    ``responses`` learner_id, item_id, correct.
    """
    title = "Item characteristic curves"
    if icc.empty:
        return empty_figure(title, "no items to draw")
    items = list(dict.fromkeys(icc["item_id"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.get_cmap("tab10")
    obs = None
    if abilities is not None and responses is not None:
        obs = responses[responses["item_id"].isin(items)].merge(abilities[["learner_id", "theta"]], on="learner_id")
        if not obs.empty:
            obs = obs.assign(group=pd.qcut(obs["theta"], n_groups, labels=False, duplicates="drop"))
            obs = obs.groupby(["item_id", "group"]).agg(theta=("theta", "mean"), p=("correct", "mean"), n=("correct", "size")).reset_index()
    for k, item in enumerate(items):
        c = icc[icc["item_id"] == item]
        ax.plot(c["theta"], c["p_correct"], color=colours(k % 10), label=str(item))
        if obs is not None and not obs.empty:
            o = obs[obs["item_id"] == item]
            ax.scatter(o["theta"], o["p"], color=colours(k % 10), s=18, marker="o", alpha=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Ability (logits)")
    ax.set_ylabel("Probability of a correct first attempt")
    ax.set_title(title + (" (lines: model; dots: observed by ability group)" if obs is not None else ""), fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    fig.tight_layout()
    alt = (
        f"{title} of {len(items)} item(s): {', '.join(map(str, items[:10]))}. Each curve rises from low to high "
        "ability; "
        + ("dots show the observed share correct in ability groups: dots far from their curve mean the item misfits."
           if obs is not None else "no observed shares drawn.")
    )
    return fig, alt


def convergence_diagnostics(diag: pd.DataFrame, *, rhat_max: float = 1.01, ess_min: float | None = None):
    """R-hat against bulk ESS of every parameter of a Bayesian fit, with the usual limits."""
    title = "Sampler diagnostics"
    if diag is None or diag.empty:
        return empty_figure(title, "no Bayesian fit was run")
    chains = int(diag.attrs.get("chains", 2))
    ess_min = ess_min if ess_min is not None else 100 * chains
    fig, ax = plt.subplots(figsize=(6, 4))
    bad = ~diag["ok"].astype(bool)
    ax.scatter(diag.loc[~bad, "ess_bulk"], diag.loc[~bad, "r_hat"], color=_BLUE, s=18, label="within limits")
    ax.scatter(diag.loc[bad, "ess_bulk"], diag.loc[bad, "r_hat"], color=_RED, s=22, label="outside limits")
    ax.axhline(rhat_max, color=_RED, lw=0.8, ls="--")
    ax.axvline(ess_min, color=_RED, lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("Bulk effective sample size")
    ax.set_ylabel("R-hat")
    n_div = int(diag.attrs.get("divergences", 0))
    ax.set_title(f"{title} ({n_div} divergent transitions)")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    alt = (
        f"{title}: {len(diag)} parameters; {int(bad.sum())} outside the limits (R-hat above {rhat_max} or bulk/tail "
        f"ESS below {ess_min:.0f}); worst R-hat {diag['r_hat'].max():.3f}, lowest bulk ESS "
        f"{diag['ess_bulk'].min():.0f}; {n_div} divergent transitions."
    )
    return fig, alt
