"""Gather a cohort's estimate tables for :func:`research.recommend.recommend`.

The earlier notebooks write their tables into the cohort's report folder
(``items.csv``, ``item_distractors.csv``, ``kcs.csv``, ``kc_models.csv``, ``dif.csv``,
``funnel.csv``, ``time_on_task.csv``). :func:`load_estimates` reads those that exist and,
when asked, computes the missing ones from the cohort's canonical tables with the
estimate modules' defaults, so the recommendation notebook also runs on its own.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from research.errors import ResearchError
from research.names import restore_csv

#: estimate table -> the CSV an earlier notebook writes for it
ESTIMATE_FILES = {
    "items": "items.csv",
    "distractors": "item_distractors.csv",
    "kcs": "kcs.csv",
    "kc_models": "kc_models.csv",
    "dif": "dif.csv",
    "funnel": "funnel.csv",
    "time_on_task": "time_on_task.csv",
    "mastery": "mastery.csv",
    "survey_items": "survey_items.csv",
}
_ID_COLUMNS = ("item_id", "module", "page", "kc", "kc_model", "option", "attribute", "reference_group",
               "focal_group", "next_module", "next_page", "next_item_id", "level",
               "construct", "dif_group_attribute", "dif_group_focal")


def _read(path: Path) -> pd.DataFrame:
    head = pd.read_csv(path, nrows=0)
    dtypes = {c: "string" for c in head.columns if c in _ID_COLUMNS}
    return restore_csv(pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""]))


def _computers(data) -> dict[str, Callable[[dict], pd.DataFrame]]:
    """How to compute each table from canonical tables (the estimate modules' defaults)."""
    from research.estimate import afm, classical, curves, dif, engagement, irt, opportunities

    cache: dict = {}

    def steps():
        if "steps" not in cache:
            cache["steps"] = opportunities.student_steps(data.attempts, data.attempt_kcs)
        return cache["steps"]

    def models():
        if "models" not in cache:
            cache["models"] = afm.fit_kc_models(steps(), cv=False)
        return cache["models"]

    def items(_):
        rasch = irt.fit_rasch(classical.first_attempt_responses(data.attempts))
        return irt.item_table(classical.item_statistics(data.attempts, data.items), rasch=rasch)

    return {
        "items": items,
        "distractors": lambda _: classical.distractor_table(data.attempts, data.items),
        "kcs": lambda _: curves.kc_table(models(), steps()),
        "kc_models": lambda _: afm.compare_kc_models(models()),
        # purified as notebook 05 does by default (two-stage Mantel-Haenszel)
        "dif": lambda _: dif.mantel_haenszel_dif(dif.first_attempt_responses(data.attempts), data.learners, purify=True),
        "funnel": lambda _: engagement.funnel(data.attempts, data.items, level="page", learners=data.learners),
        "time_on_task": lambda _: engagement.time_on_task(data.attempts, data.items, level="page"),
    }


def load_estimates(
    out_dir: str | Path,
    *,
    data=None,
    compute_missing: bool = False,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The estimate tables of a cohort: read from ``out_dir``, else computed from ``data``.

    Parameters
    ----------
    out_dir
        The cohort's report folder, where the earlier notebooks wrote their CSV tables.
    data
        The cohort's canonical tables (``ctx.data`` in a notebook); needed to compute.
    compute_missing
        Compute the tables that are not in ``out_dir`` (needs ``data``).

    Returns
    -------
    (dict, DataFrame)
        The tables by name (only those available), and one row per table: ``table``,
        ``source`` (``file``, ``computed`` or ``missing``), ``rows``, ``note`` (the file,
        or why the table is missing: its rule family is then switched off).
    """
    folder = Path(out_dir)
    tables: dict[str, pd.DataFrame] = {}
    rows = []
    computers = _computers(data) if (compute_missing and data is not None) else {}
    for name, filename in ESTIMATE_FILES.items():
        path = folder / filename
        if path.is_file():
            tables[name] = _read(path)
            rows.append((name, "file", len(tables[name]), str(path)))
            continue
        if name in computers:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tables[name] = computers[name](tables)
                rows.append((name, "computed", len(tables[name]), "computed with the estimate module's defaults"))
                continue
            except (ResearchError, ValueError, KeyError) as exc:
                rows.append((name, "missing", 0, f"could not compute: {exc}"))
                continue
        rows.append((name, "missing", 0, f"{filename} not in {folder}"))
    return tables, pd.DataFrame(rows, columns=["table", "source", "rows", "note"])
