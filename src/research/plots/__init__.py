"""Figures shared by notebooks and reports (matplotlib/seaborn; functions return a Figure).

One module per topic: :mod:`research.plots.items`, :mod:`research.plots.curves`,
:mod:`research.plots.gains`, :mod:`research.plots.equity`, :mod:`research.plots.ingest`.
No function here changes global matplotlib state or calls ``plt.show()``.
"""
