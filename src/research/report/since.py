"""The top of a report with a predecessor: what became of last time's findings, and did each change work?

Reads the two tables notebook 07 writes (:mod:`research.loop`): ``recommendation_status``
(every finding of either cohort by stable id: new, persisting, resolved) and
``comparison`` (every changed target and metric with its verdict). The words the report
uses follow from them, and only from them:

=====================  ======================================================================
outcome                when
=====================  ======================================================================
``fixed``              gone this time, and a change answered it whose verdict is *improved*
``gone_not_shown``     gone this time, a change answered it, but the change's effect is not
                       shown (no detectable change, mixed, worse or not comparable)
``gone_unchanged``     gone this time, no change answered it (it may have fallen below its
                       threshold by chance)
``still_there``        in both reports
``new``                in this report only
=====================  ======================================================================

A change (a row group of ``comparison``) *worked* when its ``target_verdict`` is
``improved``; ``no_detectable_change`` is said as "not shown", never as resolved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from research.recommend.rule_base import N_

__all__ = ["finding_outcome", "finding_outcomes", "since_section"]

OUTCOME_LABELS = {
    "fixed": N_("fixed"),
    "gone_not_shown": N_("gone, but the change's effect is not shown"),
    "gone_unchanged": N_("not found this time, without a change (may be chance)"),
    "still_there": N_("still there"),
    "new": N_("new"),
}
VERDICT_LABELS = {
    "improved": N_("worked"),
    "no_detectable_change": N_("effect not shown"),
    "worse": N_("made it worse"),
    "mixed": N_("mixed: better on one measure, worse on another"),
    "not_comparable": N_("cannot be judged"),
}
METRIC_VERDICT_LABELS = {
    "improved": N_("better"),
    "no_detectable_change": N_("no detectable change"),
    "worse": N_("worse"),
    "changed": N_("changed"),
    "not_comparable": N_("cannot be compared"),
}
CHANGE_TYPE_LABELS = {
    "item_revised": N_("item revised"),
    "item_added": N_("item added"),
    "item_removed": N_("item removed"),
    "kc_revised": N_("knowledge component revised"),
    "kc_split": N_("knowledge component split"),
    "kc_merged": N_("knowledge components merged"),
    "page_revised": N_("page revised"),
}
COMPARISON_METRIC_LABELS = {
    "difficulty": N_("Difficulty (logits)"),
    "error_rate": N_("Error rate at the first attempt"),
    "discrimination": N_("Item-rest correlation"),
    "dropout": N_("Share who stop here"),
    "learning_rate": N_("Learning rate per opportunity"),
    "dif": N_("Mantel-Haenszel delta"),
}
PERCENT_COMPARISON = {"error_rate", "dropout"}


def _missing(x: Any) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)) or (x == "")


def finding_outcome(status: str, addressed_by: Any, change_verdict: Any) -> str:
    """The report's word for one row of ``recommendation_status`` (see the module docstring)."""
    if status == "persisting":
        return "still_there"
    if status == "new":
        return "new"
    if status != "resolved":
        raise ValueError(f"unknown recommendation status {status!r}")
    if _missing(addressed_by):
        return "gone_unchanged"
    verdicts = {v.strip() for v in str(change_verdict or "").split(";") if v.strip()}
    return "fixed" if verdicts and verdicts <= {"improved"} else "gone_not_shown"


def finding_outcomes(status: pd.DataFrame) -> pd.Series:
    """:func:`finding_outcome` for every row of a ``recommendation_status`` table."""
    return pd.Series(
        [finding_outcome(str(s), a, v) for s, a, v in zip(status["status"], status["addressed_by"], status["change_verdict"])],
        index=status.index, dtype="string",
    )


def _earlier_and_new(st: pd.DataFrame, _: Callable[[str], str], target_label: Callable[[Mapping[str, Any]], str],
                     anchors: Mapping[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Last time's findings with what became of them, and this time's new ones."""
    earlier = []
    for rec in st[st["status"].isin(["persisting", "resolved"])].astype(object).to_dict("records"):
        rec = {k: (None if _missing(v) else v) for k, v in rec.items()}
        earlier.append({
            "title": _(rec["title"]) if rec.get("title") else rec["rule"],
            "target": target_label(rec),
            "outcome": rec["outcome"],
            "outcome_t": _(OUTCOME_LABELS[rec["outcome"]]),
            "changes": (rec.get("addressed_by") or "").replace(";", ", "),
            "change_verdict_t": ", ".join(_(VERDICT_LABELS.get(v, v)) for v in str(rec.get("change_verdict") or "").split(";") if v),
            "anchor": anchors.get(str(rec["recommendation_id"])),
        })
    new = []
    for rec in st[st["status"] == "new"].astype(object).to_dict("records"):
        rec = {k: (None if _missing(v) else v) for k, v in rec.items()}
        new.append({"title": _(rec["title"]) if rec.get("title") else rec["rule"], "target": target_label(rec),
                    "anchor": anchors.get(str(rec["recommendation_id"]))})
    return earlier, new


def _metric_row(r: Mapping[str, Any], view) -> dict[str, str]:
    """One measure of a change: before, after, difference and its interval, formatted."""
    _ = view._
    fmt = view.fmt
    metric = str(r["metric"])
    pct = metric in PERCENT_COMPARISON

    def val(x):
        if _missing(x):
            return ""
        return fmt.percent(float(x)) if pct else fmt.number(float(x), 2)

    interval = ""
    if not _missing(r.get("ci_low")) and not _missing(r.get("ci_high")):
        interval = _("%(low)s to %(high)s") % {"low": val(r["ci_low"]), "high": val(r["ci_high"])}
    hidden = _missing(r.get("before")) and not _missing(r.get("suppressed_reason"))
    return {
        "metric": _(COMPARISON_METRIC_LABELS[metric]) if metric in COMPARISON_METRIC_LABELS else metric,
        "before": _("hidden") if hidden else val(r.get("before")),
        "after": _("hidden") if hidden else val(r.get("after")),
        "difference": val(r.get("difference")),
        "interval": interval,
        "p_improved": "" if _missing(r.get("p_improved")) else fmt.percent(float(r["p_improved"])),
        "n": " / ".join(fmt.integer(r[k]) for k in ("n_before", "n_after") if not _missing(r.get(k))),
        "verdict": _(METRIC_VERDICT_LABELS.get(str(r["verdict"]), str(r["verdict"]))),
    }


def _changes(comparison: pd.DataFrame | None, view, target_label: Callable[[Mapping[str, Any]], str]) -> list[dict[str, Any]]:
    """One entry per change and target of ``comparison``: its verdict and the rows of its measures."""
    _ = view._
    changes: list[dict[str, Any]] = []
    if comparison is None or not len(comparison):
        return changes
    c = comparison.astype(object).where(comparison.notna(), None)
    keys = ["change_id", "target_type", "target_id", "kc_model"]
    for _key, part in c.groupby([c[k].fillna("") for k in keys], sort=False):
        first = part.iloc[0].to_dict()
        records = part.to_dict("records")
        verdict = first.get("target_verdict") or "not_comparable"
        types = [t for t in str(first.get("change_type") or "").split(";") if t]
        changes.append({
            "change_id": str(first.get("change_id") or ""),
            "type_t": ", ".join(_(CHANGE_TYPE_LABELS.get(t, t)) for t in types),
            "target": target_label({"target_type": first["target_type"], "target_id": first["target_id"],
                                    "kc_model": first.get("kc_model")}),
            "verdict": verdict,
            "verdict_t": _(VERDICT_LABELS.get(verdict, verdict)),
            "tentative": bool(first.get("too_few_anchors")) and any(str(r["metric"]) == "difficulty" for r in records),
            "rows": [_metric_row(r, view) for r in records],
        })
    return changes


def since_section(
    status: pd.DataFrame | None,
    comparison: pd.DataFrame | None,
    *,
    view,
    target_label: Callable[[Mapping[str, Any]], str],
    anchors: Mapping[str, str],
) -> dict[str, Any] | None:
    """Everything the template's "Since the previous cohort" section shows, formatted for one language.

    ``anchors`` maps recommendation ids of this report to the anchor of their evidence.
    Returns None without a status table.
    """
    if status is None:
        return None
    fmt = view.fmt
    st = status.copy()
    st["outcome"] = finding_outcomes(st) if len(st) else pd.Series(dtype="string")
    earlier, new = _earlier_and_new(st, view._, target_label, anchors)
    counts = st["outcome"].value_counts()
    summary = {k: fmt.integer(int(counts.get(k, 0))) for k in OUTCOME_LABELS}
    summary["earlier"] = fmt.integer(len(earlier))
    changes = _changes(comparison, view, target_label)
    worked = sum(ch["verdict"] == "improved" for ch in changes)
    return {
        "earlier": earlier,
        "new": new,
        "summary": summary,
        "changes": changes,
        "n_changes": fmt.integer(len(changes)),
        "n_worked": fmt.integer(worked),
        "n_new": fmt.integer(len(new)),
    }
