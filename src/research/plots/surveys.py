"""Figures for survey questions and waves. Each function returns ``(figure, alt_text)``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from research.plots.gains import new_figure

__all__ = ["item_map", "wave_means"]


def wave_means(waves: pd.DataFrame):
    """Construct means per wave on the linked latent scale with their intervals (``survey_waves``)."""
    w = waves[waves["estimate"].notna()]
    fig = new_figure(7, 3.5)
    ax = fig.subplots()
    order = {"pre": 0, "mid": 1, "post": 2}
    parts = []
    for k, (c, g) in enumerate(w.groupby("construct", observed=True, sort=True)):
        g = g.sort_values("phase", key=lambda s: s.map(order))
        x = g["phase"].map(order).to_numpy(dtype=float) + 0.06 * k
        est = g["estimate"].to_numpy(dtype=float)
        err = np.vstack([est - g["ci_low"].to_numpy(dtype=float), g["ci_high"].to_numpy(dtype=float) - est])
        dashed = not bool(g["comparable"].fillna(True).all())
        ax.errorbar(x, est, yerr=err, marker="o", capsize=3, linestyle="--" if dashed else "-", label=str(c))
        parts.append(f"{c}: " + ", ".join(f"{p} {e:+.2f} ({lo:+.2f} to {hi:+.2f})" for p, e, lo, hi in
                                         zip(g["phase"], est, g["ci_low"], g["ci_high"]))
                     + (" (comparing the waves is not safe)" if dashed else ""))
    ax.set_xticks([0, 1, 2], ["baseline", "midway", "end"])
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel("construct mean (SD of baseline)")
    ax.set_title("Survey constructs across waves (dashed: comparison not safe)")
    if parts:
        ax.legend(fontsize=8)
    alt = ("Mean of each survey construct at baseline, midway and end on one linked scale (baseline 0), with 95% "
           "intervals. " + "; ".join(parts) + ".")
    return fig, alt


def item_map(items: pd.DataFrame):
    """Each question's loading against its share of agreeing answers, problem zones shaded (``survey_items``)."""
    s = items[items["loading"].notna()]
    fig = new_figure(7, 4)
    ax = fig.subplots()
    ax.axvspan(-1, -0.3, color="#fdd0a2", alpha=0.5, label="runs against the construct")
    ax.axvspan(-0.3, 0.3, color="#fee6ce", alpha=0.5, label="does not fit the construct")
    ax.axhspan(0.9, 1.0, color="#deebf7", alpha=0.6, label="ceiling")
    ax.scatter(s["loading"].astype(float), s["share_top"].astype(float), color="#08519c", zorder=3)
    for r in s.itertuples():
        ax.annotate(str(r.item_id), (float(r.loading), float(r.share_top)), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlim(-1, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("standardised loading (after reverse coding)")
    ax.set_ylabel("share of answers in the top two categories")
    ax.set_title("Survey questions")
    ax.legend(fontsize=7, loc="lower left")
    flagged = s[(s["loading"].abs() < 0.3) | (s["loading"] < -0.3) | (s["share_top"] >= 0.9)]
    alt = (f"Loading and share of agreeing answers of {len(s)} survey questions. "
           + (("Outside the safe zone: " + ", ".join(f"{r.item_id} (loading {float(r.loading):.2f}, "
                                                       f"top share {float(r.share_top):.2f})" for r in flagged.itertuples()))
              if len(flagged) else "All questions load on their construct and none is at the ceiling") + ".")
    return fig, alt
