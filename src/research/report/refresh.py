"""Render a cohort's report again once every notebook has run: :func:`refresh_report`.

Notebook 06 writes the report as soon as the findings exist; the comparison with a
predecessor (notebook 07) comes later in the same run. :func:`refresh_report` renders the
report once more from what the run folder and the warehouse hold - the findings
(``recommendations.json``), the estimate tables, ``learning_curves.csv``,
``recommendation_status.csv`` and ``comparison.csv`` - with the cohort configuration's
language, minimum cell size, thresholds and ``labels:``, and the item titles and links of
the canonical ``items`` table. ``research.pipeline`` calls it after the last notebook when
that changes the page: notebook 07 ran, or the cohort file has ``labels:``
(:func:`research.pipeline.report_needs_refresh`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from research.recommend import load_config, load_estimates, read_recommendations

__all__ = ["refresh_report"]


def refresh_report(
    out_dir: str | os.PathLike[str],
    *,
    cohort: str,
    warehouse: str | os.PathLike[str] | None = None,
    config: Any = None,
    language: str | None = None,
) -> dict[str, Path] | None:
    """Write ``report.<language>.html`` (and its CSV and JSON) again from a finished run folder.

    ``config`` is the cohort's :class:`~research.cohort_config.CohortConfig` (or None for
    the defaults). Returns the written paths, or None when the run made no findings file
    (notebook 06 did not run).
    """
    from research.cohort import load
    from research.report.render import write_report

    folder = Path(out_dir)
    source = folder / "recommendations.json"
    if not source.is_file():
        return None
    recs = read_recommendations(source)
    recs.attrs["provenance"] = json.loads(source.read_text(encoding="utf-8")).get("provenance", {}) or {}
    estimates, _sources = load_estimates(folder)
    data = load(cohort, warehouse)
    return write_report(
        recs,
        folder,
        language=language or getattr(config, "language", None) or "en",
        min_cell_size=int(getattr(config, "min_cell_size", None) or 10),
        config=_recommend_config(recs, config),
        cohort=cohort,
        learners=data.learners,
        items=data.items,
        estimates=estimates,
        predecessor=getattr(config, "predecessor", None),
        labels=getattr(config, "labels", None) or None,
    )


def _recommend_config(recs: Any, config: Any) -> Any:
    """The recommendation settings notebook 06 made the findings with (their provenance).

    Only a findings file without them (written before they were recorded) falls back to the
    cohort file's thresholds and KC model, so the refreshed page cannot describe other rules
    than the ones that made its findings.
    """
    if "config" in recs.attrs.get("provenance", {}):
        return None  # write_report takes the findings' own settings
    return load_config(getattr(config, "thresholds", None) or None, kc_model=getattr(config, "kc_model", None))
