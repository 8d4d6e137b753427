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
from matplotlib.ticker import FuncFormatter

from research.report.i18n import Formatter

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


def embed(fig: Figure | bytes, alt: str, caption: str = "", *, dpi: int = 80) -> EmbeddedFigure:
    """A matplotlib Figure (or PNG bytes) as an inline ``data:image/png;base64,`` URI."""
    if not alt or not alt.strip():
        raise ValueError("every figure needs an alt text")
    if isinstance(fig, (bytes, bytearray)):
        png = bytes(fig)
    else:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
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
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: fmt.percent(x)))
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
