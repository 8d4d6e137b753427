"""Figures of notebook 01: activity over time and attempts per module."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

__all__ = ["activity_over_time", "attempts_by_module"]


def activity_over_time(per_day: pd.DataFrame):
    """Attempts and active learners per day. Returns (figure, alt text)."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.bar(per_day["day"], per_day["n_attempts"], color="#4a6fa5", label="attempts")
    ax.set_ylabel("attempts per day")
    ax2 = ax.twinx()
    ax2.plot(per_day["day"], per_day["n_learners"], color="#b5542c", marker=".", label="active learners")
    ax2.set_ylabel("active learners")
    ax.set_title("Activity over time")
    fig.autofmt_xdate()
    fig.tight_layout()
    peak = per_day.loc[per_day["n_attempts"].idxmax()] if len(per_day) else None
    alt = (
        f"Bar chart of attempts per day from {per_day['day'].min():%Y-%m-%d} to {per_day['day'].max():%Y-%m-%d}, "
        f"with a line of active learners per day; the busiest day, {peak['day']:%Y-%m-%d}, had {int(peak['n_attempts']):,} attempts."
        if peak is not None else "No attempts to plot."
    )
    return fig, alt


def attempts_by_module(summary: pd.DataFrame):
    """Learners and first-attempt success per module, from :func:`research.describe.ingest_summary`."""
    mods = summary[summary["level"] == "module"]
    learners = pd.to_numeric(mods["n_learners"], errors="coerce").astype("float64")  # hidden for privacy: no bar
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(mods["key"], learners.fillna(0), color="#4a6fa5")
    ax.set_ylabel("learners")
    ax.set_xlabel("module")
    ax.set_title("Learners reaching each module")
    for x, (n, p) in enumerate(zip(learners.fillna(0), mods["first_attempt_correct"])):
        ax.annotate(f"{p:.0%} correct", (x, n), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    alt = "Bar chart of learners per module: " + "; ".join(
        f"{k}: {'a hidden number of' if pd.isna(n) else int(n)} learners, {p:.0%} of first attempts correct" for k, n, p in zip(mods["key"], mods["n_learners"], mods["first_attempt_correct"])
    )
    return fig, alt
