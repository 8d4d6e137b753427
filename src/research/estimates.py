"""One function builds a cohort's estimate tables: :func:`build_estimates`.

The item table, answer options, KC models and KC table, DIF, funnel and time on task
are built by the guarded steps of :mod:`research.steps` with one :class:`EstimateSettings`,
one entry per notebook section: :func:`items` (notebook 02), :func:`kc_models` (notebook 03)
and :func:`equity` (notebook 05). The notebooks call these entries and
:func:`build_estimates` composes them, so there is one code path. The recommendations (notebook 06, when
the earlier notebooks did not write a table) and the cohort comparison
(:func:`research.loop.profile_cohort`) call :func:`build_estimates`; the report reads the
tables the notebooks wrote. So every output rests on the same numbers for the same
settings.

Settings carry the notebooks' parameter names (``min_n``, ``kc_models``, ``draws``, ...),
and their defaults are the notebooks' defaults (a test checks).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from research.errors import ConfigError

__all__ = ["ESTIMATE_TABLES", "EstimateSettings", "Estimates", "build_estimates", "equity", "for_rules", "items",
           "kc_models", "load_estimates"]

#: the estimate tables :func:`build_estimates` builds (output schema names)
ESTIMATE_TABLES = ("items", "item_distractors", "kc_models", "kcs", "learning_curves", "dif", "funnel", "time_on_task")


@dataclass(frozen=True)
class EstimateSettings:
    """The settings behind a cohort's estimates; names and defaults are the notebooks' parameters."""

    min_cell_size: int = 10
    ci_level: float = 0.95
    # items (notebook 02)
    min_n: int = 30
    fit_2pl: bool = True
    bayesian: bool = False
    draws: int = 1000
    tune: int = 1000
    seed: int = 0
    # KC models and learning curves (notebook 03)
    kc_model: str | None = None
    kc_models: tuple = ()
    cv_top: int = 5
    student_threshold: int = 10
    n_boot: int = 400
    slope_lower_bound: float | None = 0.0
    # equity and engagement (notebook 05)
    attributes: tuple | None = None
    reference_groups: dict = field(default_factory=dict)
    purify: bool = True
    purify_classes: tuple = ("B", "C")
    completion_target: float = 0.8
    funnel_level: str = "page"
    time_cap_s: float = 600
    over_factor: float = 2.0

    def __post_init__(self):
        if not 0 < float(self.ci_level) < 1:
            raise ConfigError(f"ci_level must be between 0 and 1 (for example 0.95), got {self.ci_level!r}")
        if self.funnel_level not in ("item", "page", "module"):
            raise ConfigError(f"funnel_level must be 'item', 'page' or 'module', got {self.funnel_level!r}")
        for name in ("kc_models", "purify_classes", "attributes"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def from_params(cls, params: dict | None = None, **overrides) -> "EstimateSettings":
        """Settings from notebook parameters (a notebook's ``ctx.params``); other keys are ignored.

        None stands for the default, except where None is a setting of its own (``slope_lower_bound``:
        free slopes; ``kc_model``: the best by BIC; ``attributes``: all present).
        """
        nullable = {f.name for f in fields(cls) if "None" in str(f.type)}
        given = {k: v for k, v in {**(params or {}), **overrides}.items()
                 if k in nullable or (k in {f.name for f in fields(cls)} and v is not None)}
        return cls(**given)

    def with_(self, **changes) -> "EstimateSettings":
        return replace(self, **changes)

    @property
    def thresholds(self):
        """The item flag thresholds (``min_n`` never below the minimum cell size)."""
        from research.estimate.classical import ItemThresholds

        return ItemThresholds(min_n=max(int(self.min_n), int(self.min_cell_size)))

    @property
    def sampler(self):
        """The sampler settings of the Bayesian fits."""
        from research.bayes import SamplerSettings

        return SamplerSettings(draws=int(self.draws), tune=int(self.tune), chains=2, seed=self.seed)


@dataclass
class Estimates:
    """What :func:`build_estimates` returns.

    Attributes
    ----------
    tables : dict of output table name -> DataFrame, as written to (and read back from)
        ``out_dir`` (only the tables the data allowed).
    analyses : the record of analyses that ran or were skipped, with the sentence why.
    results : the fitted objects behind the tables (``items`` with ``responses`` and
        ``rasch``; ``steps`` and ``models`` of the KC models), for figures and comparisons.
    out_dir : the folder the tables were written to.
    settings : the :class:`EstimateSettings` used.
    """

    tables: dict
    analyses: pd.DataFrame
    results: SimpleNamespace
    out_dir: Path
    settings: EstimateSettings


def _cohort_data(data, cohort: str | None):
    """The canonical tables of ``data`` (CohortData, SimulatedCohort or dict), missing ones empty."""
    from research.cohort import CohortData
    from research.schema import canonical_tables, load_schema

    if isinstance(data, CohortData):
        return data
    tables = {}
    for name in canonical_tables():
        frame = data.get(name) if isinstance(data, dict) else getattr(data, name, None)
        tables[name] = frame if frame is not None else load_schema(name).empty_frame()
    attempts = tables["attempts"]
    name = cohort or getattr(data, "cohort", None) or (str(attempts["cohort"].iloc[0]) if len(attempts) else "cohort")
    return CohortData(cohort=str(name), **tables)


def _skipped(result) -> bool:
    from research.analyses import is_skipped

    return is_skipped(result)


def items(ctx, settings: EstimateSettings, *, distractors: bool = True) -> SimpleNamespace:
    """Notebook 02's estimates: classical statistics, Rasch (and 2PL), ``items.csv`` and ``item_distractors.csv``.

    Returns ``thresholds``, ``stats`` (:func:`research.steps.item_statistics`), ``irt``
    (:func:`research.steps.fit_irt`), ``table`` (the item table) and ``distractors`` (None when
    not asked for); each a :class:`research.analyses.Skipped` with its sentence when the data
    did not allow it.
    """
    from research import steps

    th = settings.thresholds
    stats = steps.item_statistics(ctx, th)
    irt = steps.fit_irt(ctx, stats, th, fit_2pl=settings.fit_2pl, bayesian=settings.bayesian, sampler=settings.sampler)
    table = steps.item_table(ctx, stats, irt, th)
    options = steps.distractors(ctx, stats, irt) if distractors else None
    return SimpleNamespace(thresholds=th, stats=stats, irt=irt, table=table, distractors=options)


def kc_models(ctx, settings: EstimateSettings, *, curves: bool = True) -> SimpleNamespace:
    """Notebook 03's estimates: student steps, the AFM per KC model (``kc_models.csv``) and the learning
    curves (``kcs.csv``, ``learning_curves.csv``; not when ``curves`` is False).

    Returns ``student_steps``, ``fitted`` (:func:`research.steps.kc_models`) and ``curves``
    (:func:`research.steps.learning_curves`; ``settings.kc_model`` is the KC model shown).
    """
    from research import steps

    student_steps = steps.student_steps(ctx)
    fitted = steps.kc_models(ctx, student_steps, kc_models=list(settings.kc_models), cv_top=settings.cv_top,
                             slope_lower_bound=settings.slope_lower_bound, ci_level=settings.ci_level)
    result = None
    if curves:
        result = steps.learning_curves(ctx, student_steps, fitted, student_threshold=settings.student_threshold,
                                       n_boot=settings.n_boot, kc_model=settings.kc_model)
    return SimpleNamespace(student_steps=student_steps, fitted=fitted, curves=result)


def equity(ctx, settings: EstimateSettings, *, dif: bool = True, funnel: bool = True, gaps: bool = True,
           time_on_task: bool = True) -> SimpleNamespace:
    """Notebook 05's estimates, in its order: DIF (``dif.csv``), the funnel (``funnel.csv``), group gaps
    (``gaps.csv``) and time on task (``time_on_task.csv``); each only when asked for.

    Returns ``responses`` (first attempts) and ``dif``, ``funnel``, ``gaps``, ``time_on_task``
    (None for those not asked for).
    """
    from research import steps

    attributes = list(settings.attributes) if settings.attributes else None
    reference = dict(settings.reference_groups)
    responses = steps.first_attempts(ctx)
    out = SimpleNamespace(responses=responses, dif=None, funnel=None, gaps=None, time_on_task=None)
    if dif:
        out.dif = steps.dif_table(ctx, responses, attributes=attributes, reference=reference, purify=settings.purify,
                                  purify_classes=settings.purify_classes, ci_level=settings.ci_level)
    if funnel:
        out.funnel = steps.funnel(ctx, responses, level=settings.funnel_level, ci_level=settings.ci_level)
    if gaps:
        out.gaps = steps.gaps(ctx, responses, attributes=attributes, reference=reference,
                              completion_target=settings.completion_target, ci_level=settings.ci_level)
    if time_on_task:
        out.time_on_task = steps.time_on_task(ctx, responses, cap_s=settings.time_cap_s, over_factor=settings.over_factor,
                                              ci_level=settings.ci_level)
    return out


def build_estimates(data, settings: EstimateSettings | None = None, *, cohort: str | None = None,
                    out_dir: str | Path | None = None, tables=ESTIMATE_TABLES, publish: bool = True) -> Estimates:
    """Build a cohort's estimate tables from its canonical tables and settings.

    Parameters
    ----------
    data
        The cohort's canonical tables (:class:`research.cohort.CohortData`, a simulated
        cohort or a dict of DataFrames; tables left out count as empty).
    settings
        :class:`EstimateSettings` (the notebooks' defaults when None).
    out_dir
        Where to write the tables (a temporary folder when None); the tables pass the
        same schema and privacy checks as a notebook's.
    tables
        The tables wanted (names of :data:`ESTIMATE_TABLES`); the steps they rest on run.
    publish
        Check every table against the others for small groups given back by subtraction
        (:func:`research.privacy.protect_table`), as a notebook does. False for estimates
        that are inputs to another table (the cohort comparison protects its own output);
        the suppression inside each table stays.

    Returns
    -------
    Estimates
        The tables as written (suppressed cells empty), the record of what ran or was
        skipped and why, and the fitted objects.
    """
    from research.notebook import Context
    from research.recommend.inputs import read_table

    settings = settings or EstimateSettings()
    unknown = sorted(set(tables) - set(ESTIMATE_TABLES))
    if unknown:
        raise ConfigError(f"unknown estimate table(s) {', '.join(unknown)}; valid: {', '.join(ESTIMATE_TABLES)}")
    cdata = _cohort_data(data, cohort)
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="research-estimates-"))
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(cohort=cdata.cohort, warehouse=Path(), out_dir=folder, min_cell_size=int(settings.min_cell_size),
                  params={}, notebook="estimates", protect=publish)
    ctx.__dict__["data"] = cdata  # the cached property: no warehouse read
    results = SimpleNamespace(responses=None, rasch=None, twopl=None, steps=None, models=None)
    wanted = set(tables)

    if wanted & {"items", "item_distractors"}:
        section = items(ctx, settings, distractors="item_distractors" in wanted)
        if not _skipped(section.stats):
            results.responses = section.stats.responses
        if not _skipped(section.irt):
            results.rasch, results.twopl = section.irt.rasch, section.irt.twopl
    if wanted & {"kc_models", "kcs", "learning_curves"}:
        section = kc_models(ctx, settings, curves=bool(wanted & {"kcs", "learning_curves"}))
        if not _skipped(section.student_steps):
            results.steps = section.student_steps
        if not _skipped(section.fitted):
            results.models = section.fitted.models
    if wanted & {"dif", "funnel", "time_on_task"}:
        equity(ctx, settings, dif="dif" in wanted, funnel="funnel" in wanted, gaps=False,
               time_on_task="time_on_task" in wanted)

    written = {name: read_table(folder / f"{name}.csv") for name in ESTIMATE_TABLES
               if name in wanted and (folder / f"{name}.csv").is_file()}
    return Estimates(tables=written, analyses=ctx.analyses(), results=results, out_dir=folder, settings=settings)


def load_estimates(out_dir: str | Path, *, data=None, compute_missing: bool = False,
                   settings: EstimateSettings | None = None) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """The estimate tables of a cohort: read from ``out_dir``, the missing ones computed when asked.

    ``compute_missing`` builds the tables that are not in ``out_dir`` from ``data`` (the
    cohort's canonical tables) with :func:`build_estimates` and ``settings`` (the notebooks'
    defaults when None). Returns what :func:`research.recommend.load_estimates` returns: the
    tables by name and one row per table saying where it came from or why it is missing.
    """
    from research.recommend.inputs import BUILT_TABLES, ESTIMATE_FILES, load_estimates as read_estimates

    folder = Path(out_dir)
    missing = [name for name, filename in ESTIMATE_FILES.items() if not (folder / filename).is_file()]
    built = None
    if compute_missing and data is not None and any(name in BUILT_TABLES for name in missing):
        with tempfile.TemporaryDirectory(prefix="research-estimates-") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            built = build_estimates(data, settings, out_dir=tmp,
                                    tables=[BUILT_TABLES[n] for n in missing if n in BUILT_TABLES])
    return read_estimates(folder, built=built)


def for_rules(ctx, *, compute_missing: bool = True):
    """The estimate tables for the rules in a notebook: those the earlier notebooks wrote.

    When the earlier notebooks ran (their record, ``analyses.csv``, is there) nothing is
    recomputed: a table they did not write is missing because its analysis was skipped, and
    its rule family has no findings (said so). Run on its own, ``compute_missing`` computes
    the missing tables with :func:`build_estimates` (the same steps, with the settings among
    the notebook's parameters and the notebooks' defaults otherwise).
    """
    from research import steps

    record = ctx.analyses()
    earlier = not record.empty and (record["notebook"] != ctx.notebook).any()
    settings = EstimateSettings.from_params(ctx.params, min_cell_size=ctx.min_cell_size)
    estimates, sources = load_estimates(ctx.out_dir, data=ctx.data, settings=settings,
                                        compute_missing=compute_missing and not earlier)
    steps.record_families(ctx, estimates, record)
    return estimates, sources
