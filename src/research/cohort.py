"""A cohort's canonical tables, read from the warehouse into DataFrames."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd

from research.errors import ResearchError
from research.schema import canonical_tables

__all__ = ["CohortData", "load"]


@dataclass
class CohortData:
    """The canonical tables of one cohort (learner ids pseudonymised).

    ``learners`` has a column per extra learner attribute loaded through a mapping's
    ``attributes:`` (for example ``study_programme``), beside the standard ones.
    """

    cohort: str
    attempts: pd.DataFrame
    attempt_kcs: pd.DataFrame
    assessments: pd.DataFrame
    surveys: pd.DataFrame
    learners: pd.DataFrame
    items: pd.DataFrame
    quarantine: pd.DataFrame = field(default_factory=pd.DataFrame)
    loads: pd.DataFrame = field(default_factory=pd.DataFrame)

    def kc_models(self) -> list[str]:
        """The KC models present, in alphabetical order."""
        return sorted(self.attempt_kcs["kc_model"].dropna().unique().tolist())

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}={len(getattr(self, name)):,}" for name in canonical_tables())
        return f"CohortData({self.cohort!r}: {sizes})"


#: the tables of :class:`CohortData`, each read from the warehouse on first use by :func:`load`
TABLES = (*canonical_tables(), "quarantine", "loads")


class _LazyCohortData(CohortData):
    """:class:`CohortData` whose tables are read from the warehouse on first use, each once.

    The attempts and their KC tags (most of a cohort's rows) are each read when first used,
    the other tables together on the first use of any of them: notebooks 04 and 06 read
    neither of the large ones.
    """

    def __init__(self, cohort: str, warehouse: str | os.PathLike[str] | None):  # noqa: D107 - no dataclass init
        self.__dict__["cohort"] = cohort
        self.__dict__["_warehouse"] = warehouse

    def __getattr__(self, name: str):
        if name not in TABLES:
            raise AttributeError(name)
        # the two large tables one by one, the small ones together (one opening of the warehouse)
        names = [name] if name in _LARGE else [t for t in TABLES if t not in _LARGE and t not in self.__dict__]
        self.__dict__.update(_read_tables(self.cohort, self.__dict__["_warehouse"], names))
        return self.__dict__[name]


_LARGE = ("attempts", "attempt_kcs")


def _read_tables(cohort: str, warehouse, names: list[str]) -> dict[str, pd.DataFrame]:
    from research.store import open_warehouse

    out = {}
    with open_warehouse(warehouse, read_only=True) as wh:
        for name in names:
            frame = wh.table(name, cohort)
            if name == "learners":
                extra = wh.learner_attributes(cohort)
                if extra.shape[1] > 1:  # extra attributes (e.g. study_programme) become columns of learners
                    frame = frame.merge(extra, on="learner_id", how="left")
            out[name] = frame
    return out


def load(cohort: str, warehouse: str | os.PathLike[str] | None = None, *, lazy: bool = False) -> CohortData:
    """Read every canonical table of ``cohort`` from the warehouse.

    With ``lazy`` each table is read on first use instead (what a notebook's ``ctx.data`` does).
    Raises :class:`ResearchError` naming the cohorts that exist when ``cohort`` is not there.
    """
    from research.store import open_warehouse

    with open_warehouse(warehouse, read_only=True) as wh:
        if not wh.has_cohort(cohort):
            known = wh.cohorts()["cohort"].tolist()
            raise ResearchError(
                f"cohort {cohort!r} is not in warehouse {wh.path}; cohorts there: {', '.join(known) or 'none'}. "
                "Load it with `research ingest PATH... --cohort NAME`."
            )
        if lazy:
            return _LazyCohortData(cohort, warehouse)
        tables = {name: wh.table(name, cohort) for name in canonical_tables()}
        extra = wh.learner_attributes(cohort)
        if extra.shape[1] > 1:  # extra attributes (e.g. study_programme) become columns of learners
            learners = tables["learners"].merge(extra, on="learner_id", how="left")
            tables["learners"] = learners
        return CohortData(cohort=cohort, **tables, quarantine=wh.table("quarantine", cohort), loads=wh.table("loads", cohort))
