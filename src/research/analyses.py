"""Which analyses a cohort's data allows, and the record of what ran and what was skipped.

Every notebook runs the analyses its cohort's data supports and says, in the notebook and
in the report, which were skipped and why: a cohort with only test scores, only surveys,
attempts without KC tags, or three learners still gets a report. A skipped analysis is
not a failure.

:meth:`research.notebook.Context.ran` and :meth:`~research.notebook.Context.skip` record
one row per notebook x analysis in ``analyses.csv`` in the cohort's report folder
(``data_schema/outputs/analyses.schema.json``): ``status`` is ``ran``, ``adapted`` (ran
with a fallback, e.g. one KC per item, or every item flagged ``low_n``) or ``skipped``;
``reason`` is a code from :data:`REASONS`; ``numbers`` the numbers the sentence quotes
(JSON); ``message`` the English sentence. The report translates the sentence from the
code and the numbers (the templates below are the gettext message ids).

The guard functions (:func:`item_analysis_plan` and friends) decide from the canonical
tables what can run; the notebooks call them, so the decisions are tested in pytest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

__all__ = [
    "ANALYSES", "N_", "REASONS", "Record", "Skipped", "attempts_from_tests", "cohort_learners", "group_attributes",
    "group_sizes_ok", "has_item_scores", "has_prepost", "is_skipped", "n_learners", "one_kc_per_item", "sentence",
]


def N_(message: str) -> str:
    """Mark a message for extraction (pybabel ``-k N_``) without translating it here."""
    return message


#: Analysis code -> its name in the report (gettext message id).
ANALYSES: dict[str, str] = {
    "item_statistics": N_("item statistics"),
    "irt": N_("Rasch and 2PL models"),
    "distractors": N_("answer options"),
    "reliability": N_("test reliability"),
    "kc_models": N_("KC model comparison"),
    "learning_curves": N_("learning curves"),
    "kc_search": N_("search for a better KC model"),
    "mastery": N_("knowledge tracing and mastery"),
    "student_models": N_("comparison of student models"),
    "attrition": N_("attrition"),
    "gains": N_("learning gains"),
    "bayes_gains": N_("Bayesian gain model"),
    "gain_regression": N_("regression of post-test on pre-test"),
    "surveys": N_("survey change"),
    "survey_items": N_("survey questions and waves"),
    "survey_wave_comparison": N_("comparison of survey waves"),
    "survey_group_comparison": N_("comparison of learner groups on survey constructs"),
    "dif": N_("differential item functioning"),
    "gaps": N_("gaps between groups"),
    "funnel": N_("completion funnel"),
    "time_on_task": N_("time on task"),
    "findings_items": N_("findings about items"),
    "findings_kcs": N_("findings about learning curves"),
    "findings_dif": N_("findings about groups of learners"),
    "findings_pages": N_("findings about pages"),
    "findings_mastery": N_("findings about practice and mastery"),
    "findings_surveys": N_("findings about survey questions"),
}

#: Reason code -> (English sentence with {numbers}, gettext message id; the same text).
REASONS: dict[str, str] = {
    "no_attempts": N_("no attempts were loaded (practice data from the course)"),
    "no_assessments": N_("no test results were loaded"),
    "no_item_scores": N_("the tests have only total scores, no item scores"),
    "no_prepost": N_("no learner has both a pre-test and a post-test"),
    "no_surveys": N_("no survey answers were loaded"),
    "comparison_not_safe": N_("not safe for {constructs}: the questions do not work the same way in each (changed meaning: {items})"),
    "no_prepost_surveys": N_("no survey was answered both before and after"),
    "no_groups": N_("no learner attributes (such as gender or role) were loaded"),
    "groups_too_small": N_("no two groups of learners reach the minimum cell size of {min_cell_size}"),
    "bayes_group_missing": N_("the learner attribute {attribute} chosen for the Bayesian model is not in the data"),
    "too_few_learners": N_("{n_learners} learners; this needs {needed} per item: set min_n to go lower"),
    "too_few_learners_total": N_("{n_learners} learners; this needs at least {needed}"),
    "low_n_flags": N_("{n_learners} learners, fewer than min_n = {needed}: every item is marked low_n and none is judged"),
    "no_calibratable_items": N_("no item was answered both right and wrong by at least {needed} learners"),
    "one_kc_per_item": N_("the attempts have no KC tags, so each item was treated as a KC of its own"),
    "items_from_tests": N_("no attempts were loaded, so the items of the tests were analysed from their scores (one sitting per test: the one most learners took)"),
    "no_options": N_("the data has no record of the answer options chosen"),
    "no_learning_data": N_("no learner practised any KC more than once"),
    "one_kc_per_item_once": N_("the attempts have no KC tags, so each item was treated as a KC of its own, and no learner met an item more than once"),
    "no_kc_tags": N_("the attempts have no KC tags, so there is no KC model to improve"),
    "learners_sampled": N_("compared on a random {n_sampled} of the {n_learners} learners, which estimates the same accuracy in a fraction of the time"),
    "search_time_limit": N_("stopped at its time limit of {seconds} seconds before its {max_steps} steps were done, so its result depends on the machine's speed: research kc-model search runs it without the limit"),
    "not_written": N_("the notebook that computes it did not write its table"),
    "estimate_failed": N_("the data did not allow the estimate (the notebook says why)"),
}


@dataclass
class Record:
    """One row of ``analyses.csv``."""

    notebook: str
    analysis: str
    status: str  # "ran", "adapted", "skipped"
    reason: str = ""
    numbers: dict = field(default_factory=dict)
    detail: str = ""

    @property
    def message(self) -> str:
        return sentence(self.analysis, self.status, self.reason, self.numbers, detail=self.detail)

    def row(self) -> dict:
        return {"notebook": self.notebook, "analysis": self.analysis, "status": self.status, "reason": self.reason,
                "numbers": json.dumps(self.numbers, sort_keys=True, default=_plain) if self.numbers else "",
                "message": self.message}


def _plain(x):
    try:
        return x.item()
    except AttributeError:
        return str(x)


def sentence(analysis: str, status: str, reason: str, numbers: dict, *, gettext=None, detail: str = "") -> str:
    """The sentence for one record, in English or through ``gettext`` (the report's catalogue)."""
    _ = gettext or (lambda s: s)
    name = _(ANALYSES.get(analysis, analysis))
    if not reason:
        return name
    why = _(REASONS[reason]).format(**{k: _fmt(v) for k, v in (numbers or {}).items()})
    if detail and gettext is None:
        why = f"{why}: {detail}"
    return f"{name}: {why}"


def _fmt(v):
    if isinstance(v, float) and v.is_integer():
        return f"{int(v):,}"
    if isinstance(v, int):
        return f"{v:,}"
    return v


class Skipped:
    """What a notebook cell shows for an analysis it skipped: the plain sentence."""

    def __init__(self, record: Record):
        self.record = record

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Not analysed - {self.record.message}."

    def _repr_html_(self) -> str:
        import html

        return f"<p><strong>Not analysed</strong> - {html.escape(self.record.message)}.</p>"


def is_skipped(x) -> bool:
    return isinstance(x, Skipped) or x is None


# ------------------------------------------------------------------ facts about the data


def n_learners(frame: pd.DataFrame | None) -> int:
    if frame is None or frame.empty or "learner_id" not in frame.columns:
        return 0
    return int(frame["learner_id"].nunique())


def cohort_learners(data) -> int:
    """Learners in any table of the cohort."""
    ids = [t["learner_id"] for t in (data.attempts, data.assessments, data.surveys, data.learners)
           if t is not None and not t.empty and "learner_id" in t.columns]
    return int(pd.concat(ids).nunique()) if ids else 0


def has_item_scores(assessments: pd.DataFrame) -> bool:
    return not assessments.empty and (assessments["item_id"].astype(str) != "total").any()


def has_prepost(assessments: pd.DataFrame) -> bool:
    if assessments.empty:
        return False
    # some learner took both a pre and a post test of one instrument (one pass, no lambda per group)
    keys = assessments[["learner_id", "instrument"]].reset_index(drop=True)
    known = keys.notna().all(axis=1).to_numpy()
    phase = assessments["phase"].astype(str).to_numpy()
    pre = keys[known & (phase == "pre")].drop_duplicates()
    post = keys[known & (phase == "post")].drop_duplicates()
    return bool(len(pre) and len(post) and len(pre.merge(post, on=["learner_id", "instrument"], how="inner")))


def group_sizes_ok(learners: pd.DataFrame, attributes, min_cell_size: int) -> bool:
    """True when some attribute has two groups of at least ``min_cell_size`` learners."""
    for a in attributes:
        if a in learners.columns:
            counts = learners[a].dropna().astype(str).value_counts()
            if (counts >= min_cell_size).sum() >= 2:
                return True
    return False


def group_attributes(learners: pd.DataFrame) -> list[str]:
    from research.estimate.gains import group_columns

    if learners is None or learners.empty:
        return []
    return group_columns(learners)


def one_kc_per_item(attempts: pd.DataFrame, model: str = "Item") -> pd.DataFrame:
    """``attempt_kcs`` for attempts without KC tags: each item is a KC of its own (model ``Item``)."""
    out = pd.DataFrame({
        "cohort": attempts["cohort"].astype("string") if "cohort" in attempts.columns else pd.Series(dtype="string"),
        "attempt_id": attempts["attempt_id"].astype("string"),
        "kc_model": pd.Series(model, index=attempts.index, dtype="string"),
        "kc": attempts["item_id"].astype("string"),
    })
    out["opportunity"] = pd.Series(pd.NA, index=out.index, dtype="Int64")
    return out.reset_index(drop=True)


def attempts_from_tests(assessments: pd.DataFrame, cohort: str = "") -> pd.DataFrame | None:
    """Attempts-shaped rows from the 0/1 item scores of the tests, for item analysis of a tests-only cohort.

    One sitting per instrument: the phase most learners took (pre on a tie: before teaching).
    Each scored item becomes one first attempt, correct when the score is 1; the instrument is
    its module and page, and its name prefixes the item ids when there are several tests.
    None when no test has dichotomous item scores.
    """
    if assessments is None or assessments.empty:
        return None
    a = assessments[assessments["item_id"].astype(str) != "total"]
    score = pd.to_numeric(a["score"], errors="coerce")
    top = pd.to_numeric(a["max_score"], errors="coerce")
    a = a[(top == 1) & score.isin([0, 1])]
    if a.empty:
        return None
    order = {"pre": 0, "mid": 1, "post": 2}
    counts = a.groupby(["instrument", "phase"], observed=True)["learner_id"].nunique().reset_index(name="n")
    counts["rank"] = counts["phase"].astype(str).map(order)
    chosen = counts.sort_values(["instrument", "n", "rank"], ascending=[True, False, True]).drop_duplicates("instrument")
    a = a.merge(chosen[["instrument", "phase"]], on=["instrument", "phase"])
    several = a["instrument"].nunique() > 1
    inst = a["instrument"].astype(str)
    item = (inst + " " + a["item_id"].astype(str)) if several else a["item_id"].astype(str)
    n = len(a)
    base = pd.Timestamp("2000-01-01")
    return pd.DataFrame({
        "cohort": pd.array([cohort] * n, dtype="string"),
        "attempt_id": ("test:" + inst + ":" + a["phase"].astype(str) + ":" + a["learner_id"].astype(str) + ":"
                       + a["item_id"].astype(str)).astype("string").to_numpy(),
        "learner_id": a["learner_id"].astype("string").to_numpy(),
        "module": inst.astype("string").to_numpy(),
        "page": inst.astype("string").to_numpy(),
        "item_id": item.astype("string").to_numpy(),
        "step_id": item.astype("string").to_numpy(),
        "problem_view": pd.array([1] * n, dtype="Int64"),
        "attempt": pd.array([1] * n, dtype="Int64"),
        "outcome": pd.array(["correct" if v == 1 else "incorrect" for v in pd.to_numeric(a["score"])], dtype="string"),
        "response": pd.array([pd.NA] * n, dtype="string"),
        "timestamp": base + pd.to_timedelta(range(n), unit="s"),
        "duration_s": pd.Series([float("nan")] * n).to_numpy(),
    })
