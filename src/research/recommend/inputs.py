"""Gather a cohort's estimate tables for :func:`research.recommend.recommend`.

The earlier notebooks write their tables into the cohort's report folder
(``items.csv``, ``item_distractors.csv``, ``kcs.csv``, ``kc_models.csv``, ``dif.csv``,
``funnel.csv``, ``time_on_task.csv``). :func:`load_estimates` reads those that exist and,
takes the missing ones from what :func:`research.estimates.build_estimates` built (the
steps the notebooks run, with the same settings; :func:`research.estimates.load_estimates`
does both), so the recommendation notebook also runs on its own and rests on the same numbers.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from research.names import restore_csv

__all__ = ["BUILT_TABLES", "ESTIMATE_FILES", "load_estimates", "read_table"]

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


def read_table(path: Path) -> pd.DataFrame:
    """An estimate table as a notebook wrote it (id columns as text, formula neutralisation undone)."""
    head = pd.read_csv(path, nrows=0)
    dtypes = {c: "string" for c in head.columns if c in _ID_COLUMNS}
    return restore_csv(pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""]))


#: estimate table -> the output table :func:`research.estimates.build_estimates` builds for it
BUILT_TABLES = {"items": "items", "distractors": "item_distractors", "kcs": "kcs", "kc_models": "kc_models", "dif": "dif",
          "funnel": "funnel", "time_on_task": "time_on_task"}


def load_estimates(out_dir: str | Path, *, built=None) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The estimate tables of a cohort: read from ``out_dir``, else taken from ``built``.

    Parameters
    ----------
    out_dir
        The cohort's report folder, where the earlier notebooks wrote their CSV tables.
    built
        What :func:`research.estimates.build_estimates` built for the tables missing from
        ``out_dir`` (:func:`research.estimates.load_estimates` computes it when asked), or None.

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
    for name, filename in ESTIMATE_FILES.items():
        path = folder / filename
        if path.is_file():
            tables[name] = read_table(path)
            rows.append((name, "file", len(tables[name]), str(path)))
        elif built is not None and BUILT_TABLES.get(name) in built.tables:
            tables[name] = built.tables[BUILT_TABLES[name]]
            rows.append((name, "computed", len(tables[name]), "computed by the notebooks' steps (research.estimates)"))
        elif built is not None and name in BUILT_TABLES:
            why = _why_missing(built.analyses, name)
            rows.append((name, "missing", 0, f"could not compute: {why}"))
        else:
            rows.append((name, "missing", 0, f"{filename} not in {folder}"))
    return tables, pd.DataFrame(rows, columns=["table", "source", "rows", "note"])


#: estimate table -> the analyses (``analyses.csv``) whose record says why it is missing
_ANALYSES = {"items": ("item_statistics", "irt"), "distractors": ("distractors",), "kcs": ("learning_curves",),
             "kc_models": ("kc_models",), "dif": ("dif",), "funnel": ("funnel",), "time_on_task": ("time_on_task",)}


def _why_missing(record: pd.DataFrame, name: str) -> str:
    rows = record[record["analysis"].isin(_ANALYSES[name]) & (record["status"] == "skipped")]
    if not len(rows):
        return "its analysis wrote no table"
    row = rows.iloc[0]
    return row["message"] or row["reason"]
