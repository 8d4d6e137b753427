"""Figures shared by notebooks and reports (matplotlib; functions return a Figure).

One module per topic: :mod:`research.plots.items`, :mod:`research.plots.curves`,
:mod:`research.plots.gains`, :mod:`research.plots.equity`, :mod:`research.plots.ingest`.
No function here changes global matplotlib state or calls ``plt.show()``.
"""

import matplotlib.pyplot as plt

__all__ = ["empty_figure"]


def empty_figure(title: str, message: str):
    """A small figure that says why there is nothing to plot; returns (figure, alt text)."""
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig, f"{title}: {message}"
