"""Learning-curve figures: a grid of KC curves grouped by category, and the KC model comparison.

Every function returns a matplotlib Figure (no ``plt.show()``, no global style changes)
and has a companion ``*_alt`` function that writes the alt text for it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from research.errors import ConfigError

__all__ = [
    "kc_model_comparison_alt", "learning_curve_grid_alt", "plot_kc_model_comparison", "plot_learning_curve_grid",
]

#: Order of the category groups in the grid: what to look at first comes first.
CATEGORY_ORDER = ("no_learning", "still_high", "good", "low_and_flat", "too_little_data")
CATEGORY_LABELS = {
    "no_learning": "no learning",
    "still_high": "still high",
    "good": "good",
    "low_and_flat": "low and flat",
    "too_little_data": "too little data",
}
_MEASURE_LABELS = {
    "error_rate": "error rate",
    "assistance_score": "assistance score",
    "step_duration": "step duration (s)",
}


def _select(curves, kcs, kc_model, measure):
    models = sorted(map(str, pd.unique(curves["kc_model"])))
    if kc_model not in models:
        raise ConfigError(f"kc_model={kc_model!r} is not in the curves; valid KC models are {models}.")
    c = curves[(curves["kc_model"] == kc_model) & (curves["measure"] == measure) & (curves["kc"] != "(all KCs)")]
    k = kcs[kcs["kc_model"] == kc_model].copy()
    k["_order"] = k["category"].map({c_: i for i, c_ in enumerate(CATEGORY_ORDER)}).fillna(len(CATEGORY_ORDER))
    k = k.sort_values(["_order", "n_obs"], ascending=[True, False])
    return c, k


def plot_learning_curve_grid(curves: pd.DataFrame, kcs: pd.DataFrame, *, kc_model: str,
                             measure: str = "error_rate", max_kcs: int = 24, col_wrap: int = 4):
    """Small multiples of the KC learning curves of one KC model, grouped by category.

    Each panel shows the observed curve with its 95% band, the AFM prediction (dashed,
    when ``curves`` has a ``predicted`` column) and, as grey bars on a second axis, the
    number of learners at each opportunity, so attrition along the curve is visible.
    Panel titles give the KC, its category and the category's confidence. At most
    ``max_kcs`` KCs are drawn, in category order (no learning first), then by size.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if measure not in _MEASURE_LABELS:
        raise ConfigError(f"measure={measure!r} is not known; valid measures are {list(_MEASURE_LABELS)}.")
    c, k = _select(curves, kcs, kc_model, measure)
    k = k[k["kc"].isin(set(c["kc"]))].head(max_kcs)
    n = max(len(k), 1)
    ncol = min(col_wrap, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.6 * nrow), squeeze=False, sharey=True)
    ymax = 1.0 if measure == "error_rate" else float(np.nanmax(c["ci_high"])) * 1.05 if len(c) else 1.0
    for ax, row in zip(axes.ravel(), k.itertuples()):
        pts = c[c["kc"] == row.kc].sort_values("opportunity")
        x = pts["opportunity"].to_numpy()
        ax2 = ax.twinx()
        n_at = pd.to_numeric(pts["n"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)  # hidden for privacy: no bar
        ax2.bar(x, np.nan_to_num(n_at), color="0.85", width=0.8, zorder=0)
        ax2.set_ylim(0, max(float(np.nan_to_num(np.nanmax(n_at, initial=0))) * 3, 1))
        ax2.tick_params(axis="y", labelsize=7, colors="0.5")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.fill_between(x, pts["ci_low"], pts["ci_high"], color="tab:blue", alpha=0.2, linewidth=0)
        ax.plot(x, pts["estimate"], "o-", color="tab:blue", markersize=3, label="observed")
        if "predicted" in pts.columns and pts["predicted"].notna().any():
            ax.plot(x, pts["predicted"], "--", color="tab:orange", label="AFM prediction")
        conf = getattr(row, "category_confidence", "")
        cat = CATEGORY_LABELS.get(str(row.category), str(row.category))
        ax.set_title(f"{row.kc}\n{cat} ({conf})", fontsize=8)
        ax.set_ylim(0, ymax)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.ravel()[len(k):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(_MEASURE_LABELS[measure], fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("opportunity", fontsize=8)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=8, frameon=False)
    fig.suptitle(f"Learning curves by KC, model {kc_model} (grey bars: learners at each opportunity)", fontsize=10)
    fig.tight_layout()
    return fig


def learning_curve_grid_alt(curves: pd.DataFrame, kcs: pd.DataFrame, *, kc_model: str,
                            measure: str = "error_rate", max_kcs: int = 24) -> str:
    """Alt text for :func:`plot_learning_curve_grid`: the categories and the attrition in words."""
    c, k = _select(curves, kcs, kc_model, measure)
    k = k[k["kc"].isin(set(c["kc"]))].head(max_kcs)
    counts = k["category"].value_counts()
    parts = [f"{int(counts[cat])} {CATEGORY_LABELS[cat]}" for cat in CATEGORY_ORDER if cat in counts.index]
    first = c.groupby("kc")["n"].first()
    last = c.groupby("kc")["n"].last()
    drop = float((1 - last / first).median()) if len(first) else 0.0
    return (f"Grid of {len(k)} learning curves ({_MEASURE_LABELS[measure]} by opportunity) for KC model "
            f"{kc_model}, grouped by category: {', '.join(parts) or 'none'}. Each panel shows the observed "
            f"curve with its 95% band, the AFM prediction, and the learners at each opportunity; the median "
            f"KC loses {drop:.0%} of its learners between its first and last point.")


def plot_kc_model_comparison(table: pd.DataFrame):
    """Two panels: delta BIC of each KC model from the best, and its three CV RMSEs."""
    import matplotlib.pyplot as plt

    t = table.sort_values("bic")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 0.45 * len(t) + 1.8))
    y = np.arange(len(t))
    a1.barh(y, t["delta_bic"], color="tab:blue")
    a1.set_yticks(y, t["kc_model"].astype(str), fontsize=8)
    a1.invert_yaxis()
    a1.set_xlabel("BIC minus the best model's BIC (lower is better)")
    a1.set_title("KC models by BIC")
    for j, (col, label) in enumerate([("cv_rmse_learner", "learner-stratified"), ("cv_rmse_item", "item-stratified"),
                                      ("cv_rmse_unstratified", "unstratified")]):
        if col in t.columns:
            a2.plot(t[col], y, "o", label=label, alpha=0.8)
    a2.set_yticks(y, [""] * len(t))
    a2.invert_yaxis()
    a2.set_xlabel("cross-validated RMSE (lower is better)")
    a2.set_title("3-fold cross-validation")
    a2.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def kc_model_comparison_alt(table: pd.DataFrame) -> str:
    t = table.sort_values("bic")
    best = t.iloc[0]
    return (f"Comparison of {len(t)} KC models. The best by BIC is {best['kc_model']} "
            f"(BIC {best['bic']:.0f}); the left panel shows each model's BIC above the best, the right panel "
            "its cross-validated RMSE with learners, items, or random steps held out.")
