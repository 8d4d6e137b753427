"""A cohort's estimates as a comparison needs them: :func:`profile_cohort`.

The tables come from :func:`research.estimates.build_estimates`, the steps notebooks 02,
03 and 05 run, so the comparison rests on the numbers the cohort's report shows. An
analysis the data does not allow is recorded with its reason in
:attr:`CohortProfile.analyses` (and logged), never skipped in silence.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import pandas as pd

from research.errors import DataError

__all__ = ["CohortProfile", "cohort_table", "comparison_settings", "profile_cohort"]

log = logging.getLogger(__name__)


@dataclass
class CohortProfile:
    """Per-cohort estimates a comparison needs (see :func:`profile_cohort`).

    Attributes
    ----------
    cohort : str
    responses : first attempts (learner_id, item_id, correct, ...).
    items : one row per item: the item table (``items.csv``) plus ``k_correct``.
    rasch : the fitted :class:`research.estimate.irt.Rasch` (None when it could not be fitted).
    item_kcs : item_id, kc_model, kc (which KCs each item practises).
    kcs : one row per KC model x KC: the KC table (``kcs.csv``) plus ``n_steps_obs`` and
        ``n_errors`` (first-attempt errors over all its student steps).
    kc_models : fit of every KC model (``kc_models.csv``).
    item_funnel, page_funnel : :func:`research.estimate.engagement.funnel` by item and page.
    recommendations : the cohort's findings (or None).
    dif : Mantel-Haenszel DIF (``dif.csv``; None when the data did not allow it).
    analyses : what ran and what was skipped, with the sentence why (``analyses.csv``'s columns).
    """

    cohort: str
    responses: pd.DataFrame
    items: pd.DataFrame
    rasch: object
    item_kcs: pd.DataFrame
    kcs: pd.DataFrame
    kc_models: pd.DataFrame
    item_funnel: pd.DataFrame
    page_funnel: pd.DataFrame
    recommendations: pd.DataFrame | None = None
    dif: pd.DataFrame | None = None
    seconds: float = 0.0
    analyses: pd.DataFrame | None = None

    @property
    def item_ids(self) -> set[str]:
        return set(self.items["item_id"].astype(str))

    @property
    def page_ids(self) -> set[str]:
        return set(self.page_funnel["page"].dropna().astype(str))

    def not_analysed(self) -> pd.DataFrame:
        """The analyses that were skipped for this cohort, with the sentence why."""
        if self.analyses is None or self.analyses.empty:
            return pd.DataFrame(columns=["analysis", "status", "message"])
        return self.analyses.loc[self.analyses["status"] == "skipped", ["analysis", "status", "message"]].reset_index(drop=True)


def cohort_table(data, name):
    """The canonical table ``name`` of ``data`` (CohortData, simulated cohort or dict), or None."""
    frame = getattr(data, name, None)
    if frame is None and isinstance(data, dict):
        frame = data.get(name)
    return frame


def comparison_settings(min_cell_size: int = 10, **changes):
    """The :class:`~research.estimates.EstimateSettings` of a comparison: the notebooks' defaults,
    without what no comparison reads (the 2PL fit and the cross-validation of KC models)."""
    from research.estimates import EstimateSettings

    return EstimateSettings(**{"min_cell_size": min_cell_size, "fit_2pl": False, "cv_top": 0, **changes})


def profile_cohort(
    data,
    *,
    cohort: str | None = None,
    recommend: bool = True,
    recommend_config=None,
    min_cell_size: int = 10,
    dif: bool = True,
    settings=None,
) -> CohortProfile:
    """Estimate what a comparison needs for one cohort.

    Parameters
    ----------
    data
        The cohort's canonical tables: a :class:`research.cohort.CohortData`, a
        :class:`research.simulate.SimulatedCohort` or a dict with ``attempts``,
        ``attempt_kcs``, ``items`` and optionally ``learners``.
    recommend
        Also compute the cohort's recommendations (rule families items, distractors, kcs,
        dif, funnel and time_on_task) for the recommendation status.
    settings
        :class:`research.estimates.EstimateSettings`; by default :func:`comparison_settings`.
    """
    from research.estimate import engagement

    started = time.perf_counter()
    attempts = cohort_table(data, "attempts")
    if attempts is None or cohort_table(data, "attempt_kcs") is None:
        raise DataError("profile_cohort needs the cohort's attempts and attempt_kcs tables")
    if attempts.empty:
        raise DataError(f"cohort {cohort or getattr(data, 'cohort', '?')!r} has no attempts: nothing to compare")
    cohort = cohort or getattr(data, "cohort", None) or str(attempts["cohort"].iloc[0])
    settings = settings or comparison_settings(min_cell_size)
    est = _estimates(data, settings, cohort, dif=dif)
    tables = est.tables

    fa = est.results.responses
    counts = fa.groupby("item_id")["correct"].sum().rename("k_correct")
    items = tables["items"].merge(counts, left_on="item_id", right_index=True, how="left")

    kcs, item_kcs = _kcs_with_errors(tables.get("kcs"), est.results.steps)
    kc_models = tables.get("kc_models", pd.DataFrame(columns=["kc_model", "bic", "aic"]))

    items_meta = cohort_table(data, "items")
    items_meta = None if items_meta is None or items_meta.empty else items_meta
    item_funnel = engagement.funnel(attempts, items_meta, level="item", learners=cohort_table(data, "learners"))
    page_funnel = tables.get("funnel")
    if page_funnel is None or settings.funnel_level != "page":
        page_funnel = engagement.funnel(attempts, items_meta, level="page", learners=cohort_table(data, "learners"))
    recs = None
    if recommend:
        recs = _recommendations(tables, items, kcs, kc_models, page_funnel, settings, recommend_config, cohort=cohort,
                                n_learners=int(attempts["learner_id"].nunique()))
    return CohortProfile(
        cohort=str(cohort), responses=fa, items=items, rasch=est.results.rasch, item_kcs=item_kcs, kcs=kcs,
        kc_models=kc_models, item_funnel=item_funnel, page_funnel=page_funnel, recommendations=recs,
        dif=tables.get("dif"), seconds=time.perf_counter() - started, analyses=est.analyses,
    )


def _estimates(data, settings, cohort: str, *, dif: bool):
    """The estimates a comparison needs (learning curves left out; DIF only with ``dif``),
    unprotected; skipped analyses logged; an error when no item table could be built."""
    from research.estimates import ESTIMATE_TABLES, build_estimates

    wanted = [t for t in ESTIMATE_TABLES if (dif or t != "dif") and t != "learning_curves"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # inputs of the comparison, whose own table is protected when written
        est = build_estimates(data, settings, cohort=cohort, tables=wanted, publish=False)
    skipped = est.analyses[est.analyses["status"] == "skipped"]
    for row in skipped.itertuples():
        log.warning("cohort %s: %s not analysed: %s", cohort, row.analysis, row.message)
    if "items" not in est.tables:
        raise DataError(f"cohort {cohort!r}: no item table could be built ({'; '.join(skipped['message'])})")
    return est


def _kcs_with_errors(kcs: pd.DataFrame | None, steps: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The KC table with observed steps and errors per KC (n_steps_obs, n_errors), and the item x KC pairs."""
    if kcs is None:
        from research.schema import output_schema

        kcs = output_schema("kcs").empty_frame()
    if steps is not None:
        err = steps.assign(_e=1 - steps["success"]).groupby(["kc_model", "kc"], as_index=False).agg(
            n_steps_obs=("_e", "size"), n_errors=("_e", "sum"))
        err[["kc_model", "kc"]] = err[["kc_model", "kc"]].astype("string")
        kcs = kcs.merge(err, on=["kc_model", "kc"], how="left")
        item_kcs = steps[["item_id", "kc_model", "kc"]].drop_duplicates().astype("string").reset_index(drop=True)
    else:
        kcs = kcs.assign(n_steps_obs=pd.Series(dtype="float"), n_errors=pd.Series(dtype="float"))
        item_kcs = pd.DataFrame({c: pd.Series(dtype="string") for c in ("item_id", "kc_model", "kc")})
    return kcs, item_kcs


def _recommendations(tables, items, kcs, kc_models, page_funnel, settings, recommend_config, *, cohort: str,
                     n_learners: int) -> pd.DataFrame:
    """The recommendation rules run on the profile's tables (the comparison's KC model, if one is set)."""
    from research.recommend import load_config, recommend as run_rules

    rule_tables = {"items": items, "kcs": kcs, "kc_models": kc_models, "funnel": page_funnel}
    for name, source in (("distractors", "item_distractors"), ("dif", "dif"), ("time_on_task", "time_on_task")):
        if source in tables:
            rule_tables[name] = tables[source]
    config = recommend_config
    if settings.kc_model is not None:
        config = load_config(getattr(recommend_config, "settings", recommend_config), kc_model=settings.kc_model)
    return run_rules(rule_tables, config, cohort=cohort, n_learners=n_learners)
