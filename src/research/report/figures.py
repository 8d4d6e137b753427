"""Figures of the report, drawn in the report's language and embedded as base64 PNG.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global
state). Each comes with an alt text that says what the figure shows in words.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from research.report.i18n import Formatter

__all__ = [
    "EmbeddedFigure", "embed", "evidence_figure", "group_sizes_figure", "kc_curve_figure", "kc_points_figure",
    "options_figure",
]

# colours with at least 4.5:1 contrast on white (WCAG AA for text, 3:1 for graphics)
INK = "#1a1a1a"
ACCENT = "#0b57a4"
WARN = "#a4161a"


@dataclass(frozen=True)
class EmbeddedFigure:
    """A figure ready for the page: a data URI and its alt text."""

    src: str
    alt: str
    caption: str = ""


def embed(fig: Figure | bytes, alt: str, caption: str = "", *, dpi: int = 72) -> EmbeddedFigure:
    """A matplotlib Figure (or PNG bytes) as an inline ``data:image/png;base64,`` URI."""
    if not alt or not alt.strip():
        raise ValueError("every figure needs an alt text")
    if isinstance(fig, (bytes, bytearray)):
        png = bytes(fig)
    else:
        buf = io.BytesIO()
        # every figure is laid out (tight_layout) when drawn: no second drawing to crop it
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
        png = buf.getvalue()
    return EmbeddedFigure("data:image/png;base64," + base64.b64encode(png).decode("ascii"), alt, caption)


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x)) and not pd.isna(x)


def evidence_figure(
    records: pd.DataFrame,
    *,
    fmt: Formatter,
    gettext: Callable[[str], str],
    metric_label: Callable[[str], str],
    format_value: Callable[[str, float], str],
    title: str,
) -> tuple[Figure, str] | None:
    """Each finding's main evidence with its 95 % interval against the threshold that fired.

    One panel per finding (different scales); returns the figure and its alt text, or
    None when every finding's evidence is suppressed or has no threshold to show.
    """
    rows = records[records["estimate"].notna() & records["threshold"].notna()]
    if rows.empty:
        return None
    fig = Figure(figsize=(6.4, 0.4 + 1.1 * len(rows)))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    alt_parts = []
    for ax, (_, r) in zip(axes, rows.iterrows()):
        metric = str(r["metric"])
        est, thr = float(r["estimate"]), float(r["threshold"])
        lo = float(r["ci_low"]) if _finite(r["ci_low"]) else np.nan
        hi = float(r["ci_high"]) if _finite(r["ci_high"]) else np.nan
        ax.axvline(thr, color=WARN, linestyle="--", linewidth=1.5)
        if np.isfinite(lo) and np.isfinite(hi):
            ax.hlines(0, lo, hi, color=ACCENT, linewidth=3)
        ax.plot([est], [0], "o", color=ACCENT, markersize=8)
        values = [v for v in (est, thr, lo, hi) if np.isfinite(v)]
        span = max(values) - min(values) or max(abs(est), 1.0) * 0.2
        ax.set_xlim(min(values) - 0.15 * span, max(values) + 0.15 * span)
        ax.set_yticks([])
        ax.set_ylim(-1, 1)
        ax.set_title(metric_label(metric), fontsize=10, loc="left", color=INK)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos, m=metric: format_value(m, x)))
        ax.tick_params(axis="x", labelsize=9, colors=INK)
        ax.text(thr, 0.55, " " + gettext("threshold"), color=WARN, fontsize=9, va="center")
        for side in ("left", "right", "top"):
            ax.spines[side].set_visible(False)
        if np.isfinite(lo) and np.isfinite(hi):
            alt_parts.append(
                gettext("%(metric)s: %(value)s (%(level)s interval %(low)s to %(high)s), threshold %(threshold)s")
                % {
                    "metric": metric_label(metric),
                    "value": format_value(metric, est),
                    "low": format_value(metric, lo),
                    "high": format_value(metric, hi),
                    "threshold": format_value(metric, thr),
                    "level": fmt.percent_whole(0.95),
                }
            )
        else:
            alt_parts.append(
                gettext("%(metric)s: %(value)s, threshold %(threshold)s")
                % {"metric": metric_label(metric), "value": format_value(metric, est), "threshold": format_value(metric, thr)}
            )
    fig.suptitle(title, fontsize=11, color=INK, x=0.02, ha="left")
    fig.tight_layout()
    alt = title + ". " + "; ".join(alt_parts) + "."
    return fig, alt


def group_sizes_figure(sizes: pd.DataFrame, *, attribute_label: str, fmt: Formatter, gettext) -> tuple[Figure, str] | None:
    """Bar chart of the shown (not suppressed) groups of one attribute."""
    shown = sizes[sizes["n"].notna()]
    if shown.empty:
        return None
    fig = Figure(figsize=(6.4, 0.6 + 0.35 * len(shown)))
    ax = fig.subplots()
    y = np.arange(len(shown))
    ax.barh(y, shown["share"].astype(float), color=ACCENT)
    ax.set_yticks(y, labels=list(shown["group"].astype(str)))
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: fmt.percent_whole(x)))
    ax.set_xlabel(gettext("Share of learners"), color=INK)
    title = gettext("Learners by %(attribute)s") % {"attribute": attribute_label}
    ax.set_title(title, fontsize=11, loc="left", color=INK)
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    parts = [f"{g}: {fmt.percent(float(s))}" for g, s in zip(shown["group"], shown["share"])]
    hidden = int(sizes["n"].isna().sum())
    alt = title + ". " + "; ".join(parts) + "."
    if hidden:
        alt += " " + gettext("Groups not shown because they are small: %(count)s.") % {"count": fmt.integer(hidden)}
    return fig, alt


def _error_rate_axes(ax, *, fmt: Formatter, gettext, title: str, **legend) -> None:
    """A learning curve's axes: error rate 0-100 % by opportunity (whole numbers), title and legend."""
    ax.set_ylim(0, 1)
    ax.set_xlabel(gettext("Opportunity"), color=INK)
    ax.set_ylabel(gettext("Error rate"), color=INK)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt.percent_whole(v)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt.integer(v)))
    ax.set_title(title, fontsize=11, loc="left", color=INK)
    ax.legend(frameon=False, fontsize=9, **legend)


def kc_curve_figure(row, *, fmt: Formatter, gettext, title: str) -> tuple[Figure, str] | None:
    """The AFM learning curve of one KC: predicted error rate by opportunity for a typical
    learner, ``1 - logistic(intercept + slope * (opportunity - 1))``, with the band of the
    slope's 95 % interval, and the observed error rates at the first and last opportunity."""
    need = ("intercept", "slope")
    if any(_is_nan(row.get(k)) for k in need):
        return None
    last = row.get("last_opportunity")
    last = int(last) if not _is_nan(last) and float(last) >= 2 else 8
    t = np.arange(1, last + 1, dtype=float)

    def err(slope):
        return 1 - 1 / (1 + np.exp(-(float(row["intercept"]) + slope * (t - 1))))

    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.subplots()
    lo, hi = row.get("slope_ci_low"), row.get("slope_ci_high")
    if not _is_nan(lo) and not _is_nan(hi):
        ax.fill_between(t, err(float(lo)), err(float(hi)), color=ACCENT, alpha=0.18, linewidth=0)
    ax.plot(t, err(float(row["slope"])), color=ACCENT, linewidth=2, label=gettext("Fitted curve"))
    observed = [(1.0, row.get("first_error_rate")), (float(last), row.get("last_error_rate"))]
    observed = [(x, float(y)) for x, y in observed if not _is_nan(y)]
    if observed:
        ax.plot([x for x, _ in observed], [y for _, y in observed], "s", color=WARN, markersize=7,
                label=gettext("Observed"))
    _error_rate_axes(ax, fmt=fmt, gettext=gettext, title=title)
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    fitted = err(float(row["slope"]))
    alt = title + ". " + gettext(
        "Fitted error rate %(first)s at the first opportunity and %(last)s at opportunity %(n)s."
    ) % {"first": fmt.percent(fitted[0]), "last": fmt.percent(fitted[-1]), "n": fmt.integer(last)}
    if observed:
        alt += " " + gettext("Observed: %(values)s.") % {
            "values": ", ".join(f"{fmt.integer(x)}: {fmt.percent(y)}" for x, y in observed)
        }
    return fig, alt


def options_figure(rows: pd.DataFrame, *, fmt: Formatter, gettext, title: str) -> tuple[Figure, str] | None:
    """Share of learners choosing each answer option of one item; the key is marked."""
    if rows.empty or "share" not in rows.columns:
        return None
    rows = rows.sort_values("option")
    share = pd.to_numeric(rows["share"], errors="coerce").to_numpy(dtype=float)
    if np.isnan(share).all():
        return None
    key = rows["is_key"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    key_label = gettext("key")
    labels = [(f"{o} ({key_label})" if k else str(o)) for o, k in zip(rows["option"].astype(str), key)]
    fig = Figure(figsize=(6.4, 0.6 + 0.4 * len(rows)))
    ax = fig.subplots()
    y = np.arange(len(rows))
    ax.barh(y, np.nan_to_num(share), color=[WARN if k else ACCENT for k in key])
    ax.set_yticks(y, labels=labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: fmt.percent_whole(x)))
    ax.set_xlabel(gettext("Share of learners"), color=INK)
    ax.set_title(title, fontsize=11, loc="left", color=INK)
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    alt = title + ". " + "; ".join(
        f"{lab}: {fmt.percent(s)}" for lab, s in zip(labels, share) if not np.isnan(s)
    ) + "."
    return fig, alt


def _is_nan(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def kc_points_figure(points: pd.DataFrame, *, fmt: Formatter, gettext, title: str) -> tuple[Figure, str] | None:
    """The observed learning curve of one KC at every opportunity, as in notebook 03.

    ``points`` are the KC's ``error_rate`` rows of ``learning_curves.csv`` (opportunity,
    estimate, ci_low, ci_high, n, optionally predicted). The observed error rate with its
    95 % band, the AFM prediction (dashed) and, as grey bars on a second axis, the
    learners at each opportunity, printed as numbers too; the alt text names every
    opportunity with its error rate and n.
    """
    pts = points.sort_values("opportunity")
    pts = pts[pd.to_numeric(pts["estimate"], errors="coerce").notna()]
    if pts.empty:
        return None
    x = pts["opportunity"].astype(float).to_numpy()
    est = pts["estimate"].astype(float).to_numpy()
    n = pd.to_numeric(pts["n"], errors="coerce").fillna(0).to_numpy(dtype=float)
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.subplots()
    ax2 = ax.twinx()
    ax2.bar(x, n, color="#d0d0d0", width=0.7, zorder=0, label=gettext("Learners"))
    ax2.set_ylim(0, max(float(n.max()) * 3, 1))
    ax2.set_ylabel(gettext("Learners"), color="#595959")
    ax2.tick_params(axis="y", labelsize=8, colors="#595959")
    ax2.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt.integer(v)))
    for xi, ni in zip(x, n):
        ax2.text(xi, ni, fmt.integer(ni), ha="center", va="bottom", fontsize=7, color="#404040")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    if {"ci_low", "ci_high"} <= set(pts.columns):
        lo = pd.to_numeric(pts["ci_low"], errors="coerce").to_numpy(dtype=float)
        hi = pd.to_numeric(pts["ci_high"], errors="coerce").to_numpy(dtype=float)
        ax.fill_between(x, lo, hi, color=ACCENT, alpha=0.18, linewidth=0)
    ax.plot(x, est, "o-", color=ACCENT, markersize=4, linewidth=2, label=gettext("Observed"))
    if "predicted" in pts.columns and pd.to_numeric(pts["predicted"], errors="coerce").notna().any():
        ax.plot(x, pd.to_numeric(pts["predicted"], errors="coerce"), "--", color=WARN, linewidth=1.5,
                label=gettext("Fitted curve"))
    _error_rate_axes(ax, fmt=fmt, gettext=gettext, title=title, loc="upper right")
    for a in (ax, ax2):
        a.spines["top"].set_visible(False)
    fig.tight_layout()
    points_t = "; ".join(
        gettext("opportunity %(opportunity)s: %(value)s (n = %(n)s)")
        % {"opportunity": fmt.integer(o), "value": fmt.percent(e), "n": fmt.integer(k)}
        for o, e, k in zip(x, est, n)
    )
    alt = title + ". " + gettext("Observed error rate and learners at each opportunity: %(points)s.") % {"points": points_t}
    return fig, alt
