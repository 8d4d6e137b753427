"""The course developer's report: one self-contained HTML page per cohort and language.

:func:`render_report` builds the page from the recommendation records (see
:mod:`research.recommend`); :func:`write_report` writes it with
``recommendations.csv`` and ``recommendations.json`` beside it. Every visible string goes
through the gettext catalogues of :mod:`research.report.i18n`; numbers, percentages and
dates follow the language's conventions; evidence about fewer learners than the minimum
cell size is suppressed (:mod:`research.privacy`); figures, CSS and JavaScript
are inline, so the page loads nothing from anywhere.

The report's options: the keyword arguments of :func:`report_view_model`, which :func:`render_report`
and :func:`write_report` pass on.

language
    ``"sv"``, ``"da"`` or ``"en"``.
cohort
    Cohort id shown in the title (default: the records' ``cohort``).
learners
    Optional canonical ``learners`` table: the report shows group sizes per
    attribute, with small groups suppressed (primary and complementary).
attributes
    Learner attributes to show (default: every attribute column present).
figures
    Extra figures per target, keyed by ``(target_type, target_id)``, made with
    :func:`research.report.figures.embed` (each has an alt text).
min_cell_size
    Smallest group whose figures are shown (default 10).
config
    The recommendation config the records were made with (for the explanation of
    each rule and its thresholds); default: the records' provenance, else defaults.
generated
    Date printed on the report (default: today).
n_learners
    Learners in the cohort, shown when at least ``min_cell_size``.
evidence_figures
    Draw the evidence figure of each target (default True).
estimates
    The estimate tables the records came from (optional): with ``kcs`` each KC
    section gets its fitted learning curve, with ``distractors`` (or
    ``item_distractors``) each item section the shares of its answer options.
    Suppressed rows (``suppressed`` or ``suppressed_reason``) are not drawn.
max_figure_targets
    Draw figures for at most this many targets (those with the best-ranked findings;
    None: all). Every target keeps its section and evidence table; this keeps the
    page small and fast for big courses. Extra ``figures`` are always shown.
predecessor
    The cohort before a redesign: the report links to the comparison with it.
labels
    Labels for data values, kind -> {value: label} (the cohort configuration's
    ``labels:``; see :func:`check_labels`): group values per learner attribute,
    ``attributes`` (attribute names), ``kc_model``, ``kc``, ``item``, ``page``, ``module``.
    Values without a label are translated when common (female, high, ...), else shown as they are.
items
    The canonical ``items`` table: an item's ``title`` is shown beside its id and its
    ``url`` (http or https only) is linked from its section.
status, comparison
    With a predecessor, the ``recommendation_status`` and ``comparison`` tables of
    notebook 07 (:mod:`research.loop`): the report opens with what became of each
    finding of last time (fixed, still there, new) and whether each change worked
    (:mod:`research.report.since`).
analyses
    The ``analyses`` table (what ran and what was skipped, and why): the report's section
    "What was not analysed, and why".
out_dir
    The report folder: the group sizes are then protected against the tables already
    published there and written as ``group_sizes.csv`` (:func:`research.privacy.group_sizes`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

import research
from research.errors import ConfigError, DataError
from research.report.datapackage import write_datapackage
from research.recommend import RULES, RecommendConfig, load_config, validate_recommendations, write_recommendations
from research.recommend.rule_base import N_
from research.report.figures import (
    EmbeddedFigure,
    embed,
    evidence_figure,
    group_sizes_figure,
    kc_curve_figure,
    kc_points_figure,
    options_figure,
)
from research.report.i18n import Formatter, check_language, translations
from research.report.not_analysed import not_analysed_items
from research.report.since import since_section
from research.privacy import check_min_cell_size, not_suppressed, group_sizes, suppress_records

__all__ = ["render_report", "report_view_model", "write_report"]

LEARNER_ID = re.compile(r"p_[0-9a-f]{16}")

SEVERITY_LABELS = {"high": N_("High"), "medium": N_("Medium"), "low": N_("Low")}
TARGET_LABELS = {
    "item": N_("Item %(id)s"),
    "kc": N_("Knowledge component %(id)s"),
    "page": N_("Page %(id)s"),
    "module": N_("Module %(id)s"),
}
SECTION_TITLES = {
    "item": N_("Findings by item"),
    "kc": N_("Findings by knowledge component"),
    "page": N_("Findings by page"),
    "module": N_("Findings by module"),
}
METRIC_LABELS = {
    "facility": N_("Share correct at the first attempt"),
    "discrimination": N_("Item-rest correlation"),
    "hint_rate": N_("Share of attempts with a hint"),
    "outfit_mnsq": N_("Outfit mean square"),
    "infit_mnsq": N_("Infit mean square"),
    "outfit_z": N_("Outfit z"),
    "infit_z": N_("Infit z"),
    "share": N_("Share choosing the option"),
    "ability_gap": N_("Ability gap to the key"),
    "slope": N_("Learning rate per opportunity"),
    "category_confidence": N_("Confidence in the category"),
    "category_probability": N_("Confidence in the category"),
    "mh_delta": N_("Mantel-Haenszel delta"),
    "p_adjusted": N_("Adjusted p value"),
    "hazard": N_("Share who stop here"),
    "drop": N_("Learners who stop here"),
    "time_ratio": N_("Median time over planned time"),
    "median_s": N_("Median time"),
}
CATEGORY_LABELS = {
    "no_learning": N_("no learning"),
    "still_high": N_("still high"),
    "low_and_flat": N_("low and flat"),
    "too_little_data": N_("too little data"),
    "good": N_("good"),
}
RULE_CATEGORY = {
    "kc_no_learning": "no_learning",
    "kc_still_high": "still_high",
    "kc_low_and_flat": "low_and_flat",
    "kc_too_little_data": "too_little_data",
}
ATTRIBUTE_LABELS = {
    "gender": N_("gender"),
    "age_band": N_("age band"),
    "role": N_("role"),
    "region": N_("region"),
    "digital_maturity": N_("digital maturity"),
}
#: data values translated when the cohort configuration gives no label for them
VALUE_LABELS = {
    "female": N_("female"),
    "male": N_("male"),
    "other": N_("other"),
    "unknown": N_("unknown"),
    "non-binary": N_("non-binary"),
    "high": N_("high"),
    "medium": N_("medium"),
    "low": N_("low"),
    "yes": N_("yes"),
    "no": N_("no"),
}
PERCENT_METRICS = {"facility", "hint_rate", "share", "hazard", "category_confidence", "category_probability"}
# thresholds in the YAML that are shares, shown as percentages in the explanations
PERCENT_SETTINGS = {"facility_min", "facility_max", "hint_rate_min", "share_max", "share_min", "hazard_min"}
# evidence of the mastery rules (research.recommend.mastery_rules)
METRIC_LABELS.update({
    "over_practice_share": N_("Share of practice after mastery"),
    "under_practice_share": N_("Share of learners who leave below mastery"),
    "hours_after_mastery": N_("Hours spent after mastery"),
    "opportunities_median": N_("Opportunities to mastery (median)"),
})
PERCENT_METRICS |= {"over_practice_share", "under_practice_share"}
PERCENT_SETTINGS |= {"over_practice_min", "under_practice_min"}


def _is_missing(x: Any) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


class _View:
    """Formats records for one language: labels, values, sentences."""

    def __init__(self, language: str, min_cell_size: int, labels: Mapping[str, Mapping[str, str]] | None = None,
                 items: pd.DataFrame | None = None):
        self.language = language
        self.fmt = Formatter(language)
        self.tr = translations(language)
        self.k = min_cell_size
        self.labels = check_labels(labels)
        self.item_info = _item_info(items)

    def label(self, kind: str, value: Any) -> str:
        """A data value as the reader should see it: the cohort's label, else a translation, else the value."""
        if _is_missing(value):
            return ""
        text = str(value)
        given = self.labels.get(kind, {})
        if text in given:
            return given[text]
        if text.lower() in VALUE_LABELS:
            return self._(VALUE_LABELS[text.lower()])
        return text

    def _(self, message: str) -> str:
        return self.tr.gettext(message)

    def metric_label(self, metric: str) -> str:
        return self._(METRIC_LABELS[metric]) if metric in METRIC_LABELS else metric

    def value(self, metric: str, x: Any) -> str:
        if _is_missing(x):
            return ""
        x = float(x)
        if metric in PERCENT_METRICS:
            return self.fmt.percent(x)
        if metric == "p_adjusted":
            return self.fmt.p_value(x)
        if metric in {"drop"}:
            return self.fmt.integer(x)
        if metric == "median_s":
            return self.fmt.duration(x)
        if metric == "time_ratio":
            return self.fmt.ratio(x)
        if metric in {"slope"}:
            return self.fmt.number(x, 3)
        if metric in {"outfit_z", "infit_z"}:
            return self.fmt.number(x, 1)
        return self.fmt.number(x, 2)

    def setting(self, key: str, x: Any) -> str:
        if isinstance(x, bool) or _is_missing(x) or not isinstance(x, (int, float)):
            return str(x)
        if key in PERCENT_SETTINGS:
            return self.fmt.percent(float(x))
        if key in {"min_drop", "min_n"}:
            return self.fmt.integer(x)
        if key == "alpha":
            return self.fmt.number(float(x), 2)
        return self.fmt.number(float(x), 2 if key.startswith("discrimination") else 1 if key.endswith("ratio_min") or key.startswith("z_") else 2)

    def target(self, rec: Mapping[str, Any]) -> str:
        kind = {"item": "item", "kc": "kc", "page": "page", "module": "module"}.get(rec["target_type"], "")
        label = self._(TARGET_LABELS.get(rec["target_type"], "%(id)s")) % {"id": self.label(kind, rec["target_id"])}
        if rec["target_type"] == "kc" and not _is_missing(rec.get("kc_model")):
            label += " " + self._("(KC model %(model)s)") % {"model": self.label("kc_model", rec["kc_model"])}
        if rec["target_type"] == "item":
            title = self.item_info.get(str(rec["target_id"]), {}).get("title")
            if title and title != str(rec["target_id"]) and title != label:
                label += " – " + title
        return label

    def detail(self, rec: Mapping[str, Any]) -> str:
        d = rec.get("detail")
        if _is_missing(d) or d == "":
            return ""
        if rec["family"] == "distractors":
            return self._("option %(option)s") % {"option": d}
        if rec["family"] == "dif":
            attribute, _sep, groups = str(d).partition("=")
            harder, _sep, easier = groups.partition("/")
            return self._("harder for the group %(group)s than for %(other)s (%(attribute)s)") % {
                "group": self.label(attribute, harder), "other": self.label(attribute, easier),
                "attribute": self.attribute(attribute)}
        if rec["family"] == "funnel":
            return self._("or at the start of the next one, %(next)s") % {"next": self.label(rec.get("target_type") or "page", d)}
        return str(d)

    def attribute(self, name: str) -> str:
        given = self.labels.get("attributes", {})
        if name in given:
            return given[name]
        return self._(ATTRIBUTE_LABELS[name]) if name in ATTRIBUTE_LABELS else name

    def threshold(self, op: str, metric: str, threshold: Any, rule: str) -> str:
        if op == "category":
            cat = RULE_CATEGORY.get(rule, "")
            return self._("Category: %(category)s") % {"category": self._(CATEGORY_LABELS.get(cat, cat))}
        t = self.value(metric, threshold)
        if op == "planned":
            return self._("Planned: %(threshold)s") % {"threshold": self.fmt.duration(float(threshold))}
        message = {
            ">": N_("Fires above %(threshold)s"),
            "<": N_("Fires below %(threshold)s"),
            ">=": N_("Fires at %(threshold)s or more"),
            "|x|>=": N_("Fires at %(threshold)s or more in either direction"),
            "|x|>": N_("Fires above %(threshold)s in either direction"),
            "|x|<": N_("Fires while it stays within %(threshold)s of zero"),
        }.get(op, "%(threshold)s")
        return self._(message) % {"threshold": t}

    def evidence_rows(self, rec: Mapping[str, Any]) -> list[dict[str, str]]:
        rows = []
        for sfx in ("", "_2"):
            metric = rec.get(f"metric{sfx}")
            if _is_missing(metric) or metric == "":
                continue
            est = rec.get(f"estimate{sfx}")
            lo, hi = rec.get(f"ci_low{sfx}"), rec.get(f"ci_high{sfx}")
            suppressed = _is_missing(est) and not _is_missing(rec.get("suppressed_reason"))
            rows.append(
                {
                    "metric": self.metric_label(metric),
                    "estimate": self._("hidden") if suppressed else self.value(metric, est),
                    "interval": ""
                    if suppressed or _is_missing(lo) or _is_missing(hi)
                    else self._("%(low)s to %(high)s") % {"low": self.value(metric, lo), "high": self.value(metric, hi)},
                    "n": self._("hidden") if suppressed else self.fmt.integer(rec.get(f"n{sfx}")),
                    "threshold": self.threshold(
                        rec.get(f"threshold_op{sfx}") or "", metric, rec.get(f"threshold{sfx}"), rec["rule"]
                    ),
                    "suppressed": suppressed,
                }
            )
        return rows

    def sentence(self, rec: Mapping[str, Any]) -> str:
        """The main evidence in one plain sentence."""
        metric = rec["metric"]
        if not _is_missing(rec.get("suppressed_reason")) and _is_missing(rec.get("estimate")):
            return self._("The figures are hidden because fewer than %(k)s learners are involved.") % {
                "k": self.fmt.integer(self.k)
            }
        if rec["threshold_op"] == "category":
            return self._("The learning curve falls in the category “%(category)s” (confidence %(confidence)s).") % {
                "category": self._(CATEGORY_LABELS.get(RULE_CATEGORY.get(rec["rule"], ""), "")),
                "confidence": self.fmt.percent(float(rec["estimate_2"])) if not _is_missing(rec.get("estimate_2")) else "",
            }
        values = {
            "metric": self.metric_label(metric),
            "value": self.value(metric, rec["estimate"]),
            "n": self.fmt.integer(rec["n"]),
            "threshold": self.value(metric, rec["threshold"]),
        }
        if not _is_missing(rec.get("ci_low")) and not _is_missing(rec.get("ci_high")):
            values.update(low=self.value(metric, rec["ci_low"]), high=self.value(metric, rec["ci_high"]))
            values["level"] = self.fmt.percent_whole(0.95)
            return self._("%(metric)s: %(value)s (%(level)s interval %(low)s to %(high)s, n = %(n)s); the limit is %(threshold)s.") % values
        return self._("%(metric)s: %(value)s (n = %(n)s); the limit is %(threshold)s.") % values


LABEL_KINDS = ("attributes", "kc_model", "kc", "item", "page", "module")
TITLE_MAX = 100  # characters of an item's title shown beside its id


def check_labels(labels: Mapping[str, Any] | None) -> dict[str, dict[str, str]]:
    """Validate a ``labels:`` mapping (from the cohort configuration): kind -> {value: label}.

    Kinds are learner attributes (``gender``, ``role``, ...: their group values),
    ``attributes`` (the attribute names themselves), ``kc_model``, ``kc``, ``item``,
    ``page`` and ``module``. Labels are plain text (escaped on the page).
    """
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise ConfigError(f"labels must be a mapping of kind to {{value: label}}, got {type(labels).__name__}")
    out: dict[str, dict[str, str]] = {}
    for kind, mapping in labels.items():
        if not isinstance(mapping, Mapping):
            raise ConfigError(
                f"labels[{kind!r}] must be a mapping of value to label, got {type(mapping).__name__}; "
                f"for example labels: {{gender: {{female: kvinna}}}}. Kinds: learner attributes or {', '.join(LABEL_KINDS)}"
            )
        out[str(kind)] = {str(k): str(v) for k, v in mapping.items()}
    return out


def _item_info(items: pd.DataFrame | None) -> dict[str, dict[str, str]]:
    """item_id -> {"title", "url"} from the canonical items table (only http(s) links are kept)."""
    if items is None or "item_id" not in items.columns or not ({"title", "url"} & set(items.columns)):
        return {}
    info: dict[str, dict[str, str]] = {}
    for rec in items.astype(object).to_dict("records"):
        entry = {}
        title = rec.get("title")
        if not _is_missing(title) and str(title).strip():
            text = " ".join(str(title).split())
            entry["title"] = text if len(text) <= TITLE_MAX else text[: TITLE_MAX - 1].rstrip() + "…"
        url = rec.get("url")
        if not _is_missing(url) and re.match(r"https?://[^\s<>\"']+\Z", str(url).strip()):
            entry["url"] = str(url).strip()
        if entry:
            info[str(rec["item_id"])] = entry
    return info


def _anchor(target_type: str, target_id: str, kc_model: Any = None) -> str:
    raw = f"{target_type}-{'' if _is_missing(kc_model) else str(kc_model) + '-'}{target_id}"
    return "t-" + re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-")


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in df.astype("object").to_dict("records"):
        out.append({k: (None if _is_missing(v) else v) for k, v in rec.items()})
    return out


def _shown(df: pd.DataFrame) -> pd.DataFrame:
    return df[not_suppressed(df)]


def _estimate_figures(ttype: str, target: Mapping[str, Any], estimates: Mapping[str, pd.DataFrame], view: "_View"):
    """Figures drawn from the estimate tables for one target (learning curve, answer options)."""
    out = []
    _ = view._
    first = target["findings"][0]
    if ttype == "kc" and estimates.get("kcs") is not None:
        kcs = _shown(estimates["kcs"])
        match = kcs["kc"].astype(str) == str(first["target_id"])
        if "kc_model" in kcs.columns and first.get("kc_model") is not None:
            match &= kcs["kc_model"].astype(str) == str(first["kc_model"])
        rows = kcs[match.to_numpy(dtype=bool)]
        curves = estimates.get("learning_curves")
        points = None
        if curves is not None and {"kc", "measure", "opportunity", "estimate", "n"} <= set(curves.columns):
            pm = (curves["kc"].astype(str) == str(first["target_id"])) & (curves["measure"].astype(str) == "error_rate")
            if "kc_model" in curves.columns and first.get("kc_model") is not None:
                pm &= curves["kc_model"].astype(str) == str(first["kc_model"])
            points = curves[pm.to_numpy(dtype=bool)]
            points = points[pd.to_numeric(points["n"], errors="coerce") >= view.k]
        if points is not None and len(points):
            made = kc_points_figure(points, fmt=view.fmt, gettext=view.tr.gettext,
                                    title=_("Learning curve of %(target)s") % {"target": target["label"]})
            if made:
                out.append(embed(*made, _("Dots joined by a line are the observed error rates at each opportunity, the band their %(level)s interval, the dashed line the fitted curve; grey bars and the numbers above them are the learners at each opportunity.") % {"level": view.fmt.percent_whole(0.95)}))
        elif len(rows) == 1 and float(rows["n_learners"].iloc[0] if "n_learners" in rows else view.k) >= view.k:
            made = kc_curve_figure(rows.iloc[0].to_dict(), fmt=view.fmt, gettext=view.tr.gettext,
                                   title=_("Learning curve of %(target)s") % {"target": target["label"]})
            if made:
                out.append(embed(*made, _("The line is the fitted error rate of a typical learner, the band its %(level)s interval; squares are the observed error rates.") % {"level": view.fmt.percent_whole(0.95)}))
    dis = estimates.get("distractors", estimates.get("item_distractors"))
    if ttype == "item" and dis is not None and {"item_id", "option", "is_key", "share"} <= set(dis.columns):
        rows = _shown(dis)
        rows = rows[rows["item_id"].astype(str) == str(first["target_id"])]
        n_item = pd.to_numeric(rows["n"], errors="coerce").sum() if "n" in rows.columns else view.k
        if len(rows) and n_item >= view.k:
            made = options_figure(rows, fmt=view.fmt, gettext=view.tr.gettext,
                                  title=_("Answer options of %(target)s") % {"target": target["label"]})
            if made:
                out.append(embed(*made))
    return out


def _hidden_options_note(item_id: str, estimates: Mapping[str, pd.DataFrame], view: "_View") -> str:
    """Say how many answer options of an item are not shown because few learners chose them."""
    dis = estimates.get("distractors", estimates.get("item_distractors"))
    if dis is None or "item_id" not in dis.columns:
        return ""
    of_item = dis[dis["item_id"].astype(str) == str(item_id)]
    hidden = len(of_item) - int(not_suppressed(of_item).sum()) if len(of_item) else 0
    if not hidden:
        return ""
    return view._("Answer options chosen by fewer than %(k)s learners are not shown: %(count)s.") % {
        "k": view.fmt.integer(view.k), "count": view.fmt.integer(hidden)}


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("research.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _static(name: str) -> Markup:
    return Markup(resources.files("research.report").joinpath("static", name).read_text(encoding="utf-8"))


def _finding_view(rec: dict[str, Any], view: _View) -> dict[str, Any]:
    """One finding as the page shows it: the record's fields plus its formatted, translated texts."""
    dyn = view.tr.gettext  # messages looked up by key (marked with N_ where they are defined)
    _ = view._
    rec = dict(rec)
    rec["anchor"] = _anchor(rec["target_type"], rec["target_id"], rec.get("kc_model"))
    rec["title_t"] = dyn(rec["title"])
    rec["action_t"] = dyn(rec["action"])
    rec["severity_t"] = dyn(SEVERITY_LABELS[rec["severity"]])
    rec["target_t"] = view.target(rec)
    rec["detail_t"] = view.detail(rec)
    rec["sentence"] = view.sentence(rec)
    rec["evidence"] = view.evidence_rows(rec)
    rec["priority_t"] = view.fmt.integer(rec["priority"])
    rec["n_affected_t"] = _("hidden") if rec.get("n_affected") is None else view.fmt.integer(rec["n_affected"])
    rec["n_affected_sort"] = -1 if rec.get("n_affected") is None else rec["n_affected"]
    rec["confidence_t"] = _("hidden") if rec.get("confidence") is None else view.fmt.percent(rec["confidence"])
    rec["severity_order"] = {"high": 3, "medium": 2, "low": 1}[rec["severity"]]
    return rec


def _fix_first_cards(recs: list[dict[str, Any]], top_n: int) -> list[dict[str, Any]]:
    """"Fix these first": one card per target for the first ``top_n`` targets with a finding to fix first.

    Only findings whose evidence clears their threshold are to be fixed first (research.recommend);
    every further finding on a card's target joins that card (``also``).
    """
    cards: dict[str, dict[str, Any]] = {}
    first: dict[str, int] = {}
    for r in recs:
        if r.get("fix_first") and r["anchor"] not in cards and len(cards) < top_n:
            cards[r["anchor"]] = {**r, "also": []}
            first[r["anchor"]] = id(r)
    for r in recs:
        card = cards.get(r["anchor"])
        if card is not None and id(r) != first[r["anchor"]]:
            card["also"].append(r)
    return list(cards.values())


def _target_figures(ttype: str, t: dict[str, Any], figures: Mapping[tuple[str, str], Sequence[EmbeddedFigure]],
                    estimates: Mapping[str, pd.DataFrame], view: _View, *, evidence: bool, drawn: bool) -> list[EmbeddedFigure]:
    """A target's figures: its evidence, then those of the estimate tables (when drawn), then the caller's."""
    _ = view._
    figs: list[EmbeddedFigure] = list(figures.get(t["key"], []))
    if evidence and drawn:
        made = evidence_figure(
            pd.DataFrame(t["findings"]),
            fmt=view.fmt,
            gettext=view.tr.gettext,
            metric_label=view.metric_label,
            format_value=view.value,
            title=_("Evidence for %(target)s") % {"target": t["label"]},
        )
        if made is not None:
            fig, alt = made
            figs.insert(0, embed(fig, alt, _("Each dot is an estimate, the bar its %(level)s interval, the dashed line the threshold of the rule.") % {"level": view.fmt.percent_whole(0.95)}))
    if drawn:
        figs.extend(_estimate_figures(ttype, t, estimates, view))
    return figs


def _target_where(ttype: str, t: Mapping[str, Any], view: _View) -> str:
    """Where a target sits in the course: its page and module (those above it)."""
    where = []
    if ttype != "page" and t["page"]:
        where.append(view._("page %(page)s") % {"page": view.label("page", t["page"])})
    if ttype != "module" and t["module"]:
        where.append(view._("module %(module)s") % {"module": view.label("module", t["module"])})
    return ", ".join(where)


def _target_sections(recs: list[dict[str, Any]], view: _View, *, figures: Mapping[tuple[str, str], Sequence[EmbeddedFigure]],
                     estimates: Mapping[str, pd.DataFrame], evidence_figures: bool, drawn: set[str]) -> list[dict[str, Any]]:
    """One section per target type, one article per target in order of its best rank, with figures and notes."""
    sections = []
    for ttype in ("item", "kc", "page", "module"):
        of_type = [r for r in recs if r["target_type"] == ttype]
        if not of_type:
            continue
        targets: dict[str, dict[str, Any]] = {}
        for r in of_type:
            t = targets.setdefault(
                r["anchor"],
                {"anchor": r["anchor"], "label": r["target_t"], "findings": [], "module": r.get("module"),
                 "page": r.get("page"), "key": (ttype, r["target_id"]), "notes": [],
                 "url": view.item_info.get(str(r["target_id"]), {}).get("url") if ttype == "item" else None},
            )
            t["findings"].append(r)
        for t in targets.values():
            t["figures"] = _target_figures(ttype, t, figures, estimates, view,
                                           evidence=evidence_figures, drawn=t["anchor"] in drawn)
            if ttype == "item":
                note = _hidden_options_note(t["key"][1], estimates, view)
                if note:
                    t["notes"].append(note)
            t["where"] = _target_where(ttype, t, view)
        sections.append({"type": ttype, "title": view.tr.gettext(SECTION_TITLES[ttype]), "targets": list(targets.values())})
    return sections


def _rule_help(config: RecommendConfig, view: _View) -> list[dict[str, Any]]:
    """Every rule explained with the thresholds it ran with."""
    dyn = view.tr.gettext
    out = []
    for name, rule in RULES.items():
        settings = config.rule(name)
        values = {key: view.setting(key, v) for key, v in settings.items()}
        out.append(
            {
                "name": name,
                "title": dyn(rule.title),
                "explanation": dyn(rule.explanation) % values,
                "action": dyn(rule.action),
                "enabled": bool(settings["enabled"]),
                "severity": dyn(SEVERITY_LABELS[settings["severity"]]),
            }
        )
    return out


def _participants(learners: pd.DataFrame, attributes: Sequence[str] | None, view: _View,
                  out_dir: str | Path | None) -> list[dict[str, Any]]:
    """Group sizes per learner attribute, small groups hidden (protected against the folder's tables)."""
    _ = view._
    out = []
    sizes = group_sizes(learners, attributes, min_cell_size=view.k, out_dir=out_dir)
    for attribute, part in sizes.groupby("attribute", sort=False):
        label = view.attribute(str(attribute))
        rows = [
            {
                "group": view.label(str(attribute), g),
                "n": _("hidden") if pd.isna(n) else view.fmt.integer(n),
                "share": _("hidden") if pd.isna(s) else view.fmt.percent(float(s)),
                "hidden": bool(pd.isna(n)),
            }
            for g, n, s in zip(part["group"], part["n"], part["share"])
        ]
        made = group_sizes_figure(part.assign(group=[view.label(str(attribute), g) for g in part["group"]]),
                                  attribute_label=label, fmt=view.fmt, gettext=view.tr.gettext)
        out.append(
            {"attribute": label, "rows": rows, "figure": embed(*made) if made else None,
             "anchor": _anchor("attr", str(attribute))}
        )
    return out


def _resolve_config(recommendations: pd.DataFrame, config: RecommendConfig | Mapping[str, Any] | str | Path | None) -> RecommendConfig:
    """The recommendation config the records were made with: given, else their provenance, else defaults."""
    if config is None:
        prov = recommendations.attrs.get("provenance", {})
        return RecommendConfig(settings=prov["config"]) if "config" in prov else load_config()
    if not isinstance(config, RecommendConfig):
        return load_config(config)
    return config


def _validated_config(recommendations: pd.DataFrame,
                      config: RecommendConfig | Mapping[str, Any] | str | Path | None) -> RecommendConfig:
    """The records' recommendation config (:func:`_resolve_config`), once the records are checked against their schema."""
    if not isinstance(recommendations, pd.DataFrame):
        raise DataError(f"recommendations must be a DataFrame, got {type(recommendations).__name__}")
    validate_recommendations(recommendations)
    return _resolve_config(recommendations, config)


def report_view_model(
    recommendations: pd.DataFrame,
    *,
    language: str = "en",
    cohort: str | None = None,
    learners: pd.DataFrame | None = None,
    attributes: Sequence[str] | None = None,
    figures: Mapping[tuple[str, str], Sequence[EmbeddedFigure]] | None = None,
    min_cell_size: int = 10,
    config: RecommendConfig | Mapping[str, Any] | str | Path | None = None,
    generated: dt.date | None = None,
    n_learners: int | None = None,
    evidence_figures: bool = True,
    estimates: Mapping[str, pd.DataFrame] | None = None,
    max_figure_targets: int | None = 60,
    predecessor: str | None = None,
    analyses: pd.DataFrame | None = None,
    out_dir: str | Path | None = None,
    labels: Mapping[str, Mapping[str, str]] | None = None,
    items: pd.DataFrame | None = None,
    status: pd.DataFrame | None = None,
    comparison: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The report of one cohort in one language as plain data: what ``report.html.j2`` renders,
    every value already formatted and translated (the template escapes it and adds only its own
    fixed texts). :func:`render_report` renders it.

    Keys: ``lang``, ``cohort``, ``generated``, ``version``, ``predecessor``, ``not_analysed``,
    ``since``, ``top`` (the "fix these first" cards), ``recs`` (every finding in rank order),
    ``sections`` (per target type, per target: findings, figures, notes), ``rules``,
    ``rules_present``, ``participants``, ``summary``, ``n_learners``, ``min_cell_size``,
    ``severity_labels``, ``level``, ``figure_note``.

    ``recommendations`` are records from :func:`research.recommend.recommend` (validated against
    their schema); the other arguments are the report's options (see the module docstring).
    """
    language = check_language(language)
    k = check_min_cell_size(min_cell_size)
    config = _validated_config(recommendations, config)
    view = _View(language, k, labels=labels, items=items)
    safe, recs = _findings(recommendations, view, out_dir)
    top = _fix_first_cards(recs, int(config.priority["top_n"]))
    ranked_targets, limit = _figure_targets(recs, max_figure_targets)
    sections = _target_sections(recs, view, figures=figures or {}, estimates=estimates or {},
                                evidence_figures=evidence_figures, drawn=set(ranked_targets[:limit]))
    rules_present = _rules_present(recs, view)
    participants, n_learners = _learner_groups(learners, attributes, view, out_dir, n_learners)
    return dict(
        **_page_head(recommendations, cohort, view, generated=generated, predecessor=predecessor, analyses=analyses),
        since=_since(recs, view, predecessor=predecessor, status=status, comparison=comparison),
        top=top, recs=recs, sections=sections, rules=_rule_help(config, view), rules_present=rules_present,
        participants=participants, summary=_summary_counts(safe, view),
        **_page_texts(view, n_learners, limit, len(ranked_targets)),
    )


def _findings(recommendations: pd.DataFrame, view: _View, out_dir: str | Path | None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The records with small cells suppressed, and each finding as the page shows it, in rank order,
    with the KC-model change a search supports (:mod:`research.kcmodel.advice`) in the report's language."""
    from research.kcmodel.advice import report_changes

    safe = suppress_records(recommendations, min_cell_size=view.k)
    recs = [_finding_view(rec, view) for rec in _records(safe.sort_values("rank"))]
    changes = report_changes(safe, out_dir, language=view.language)
    for rec in recs:
        rec["kc_model_change_t"] = changes.get(rec["recommendation_id"], "")
    return safe, recs


def _figure_targets(recs: list[dict[str, Any]], max_figure_targets: int | None) -> tuple[list[str], int]:
    """The targets in the order of their best-ranked finding, and how many of them (the first) get figures."""
    ranked_targets = list(dict.fromkeys(r["anchor"] for r in recs))
    limit = len(ranked_targets) if max_figure_targets is None else int(max_figure_targets)
    return ranked_targets, limit


def _rules_present(recs: list[dict[str, Any]], view: _View) -> list[dict[str, str]]:
    """The rules with a finding on the page, in the order of ``RULES``, with their translated titles."""
    present = sorted({r["rule"] for r in recs}, key=list(RULES).index)
    return [{"name": n, "title": view.tr.gettext(RULES[n].title)} for n in present]


def _learner_groups(learners: pd.DataFrame | None, attributes: Sequence[str] | None, view: _View,
                    out_dir: str | Path | None, n_learners: int | None) -> tuple[list[dict[str, Any]], int | None]:
    """The group sizes per attribute (:func:`_participants`; none without learners) and the learners in the cohort:
    ``n_learners`` when given, else those in ``learners``."""
    if learners is None or not len(learners):
        return [], n_learners
    participants = _participants(learners, attributes, view, out_dir)
    if n_learners is None and "learner_id" in learners.columns:
        n_learners = int(learners["learner_id"].nunique())
    return participants, n_learners


def _page_head(recommendations: pd.DataFrame, cohort: str | None, view: _View, *, generated: dt.date | None,
               predecessor: str | None, analyses: pd.DataFrame | None) -> dict[str, Any]:
    """The head of the page: language, cohort (given, else the records' first), date, version, predecessor and
    what was not analysed."""
    if cohort is None:
        cohorts = recommendations["cohort"].dropna().unique()
        cohort = str(cohorts[0]) if len(cohorts) else ""
    return dict(lang=view.language, cohort=cohort, generated=view.fmt.date(generated or dt.date.today()),
                version=research.__version__, predecessor=predecessor,
                not_analysed=not_analysed_items(analyses, view.tr.gettext, view.fmt.integer))


def _summary_counts(safe: pd.DataFrame, view: _View) -> dict[str, str]:
    """Findings in all and per severity, formatted."""
    counts = safe["severity"].value_counts()
    summary = {"total": view.fmt.integer(len(safe))}
    summary.update({s: view.fmt.integer(counts.get(s, 0)) for s in ("high", "medium", "low")})
    return summary


def _since(recs: list[dict[str, Any]], view: _View, *, predecessor: str | None, status: pd.DataFrame | None,
           comparison: pd.DataFrame | None) -> dict[str, Any] | None:
    """What became of the predecessor's findings (:func:`since_section`), when there is a predecessor's status table."""
    if predecessor is None or status is None:
        return None
    by_id = {r["recommendation_id"]: r["anchor"] for r in recs}
    return since_section(status, comparison, view=view, anchors=by_id,
                         target_label=lambda rec: view.target({k: rec.get(k) for k in ("target_type", "target_id", "kc_model")}))


def _figure_note(view: _View, limit: int, n_targets: int) -> str:
    """Say that figures are drawn for the first ``limit`` targets only, when there are more."""
    if limit >= n_targets:
        return ""
    return view._("Figures are drawn for the %(n)s targets with the most important findings; the others show their evidence as tables.") % {
        "n": view.fmt.integer(limit)}


def _page_texts(view: _View, n_learners: int | None, limit: int, n_targets: int) -> dict[str, Any]:
    """The page's counts and fixed texts: the learners (when at least the cell size), the cell size, the severity
    labels, the interval level and the figure note."""
    return dict(
        n_learners=view.fmt.integer(n_learners) if n_learners is not None and n_learners >= view.k else None,
        min_cell_size=view.fmt.integer(view.k),
        severity_labels={s: view.tr.gettext(lab) for s, lab in SEVERITY_LABELS.items()},
        level=view.fmt.percent_whole(0.95),
        figure_note=_figure_note(view, limit, n_targets),
    )


def render_report(recommendations: pd.DataFrame, **options: Any) -> str:
    """Render the report of one cohort in one language; returns the HTML text.

    The page is :func:`report_view_model` (every value formatted and translated; it takes the
    same arguments, ``language``, ``learners``, ``estimates``, ``predecessor`` and the others)
    rendered by the template ``report.html.j2``. A learner id on the page stops it (``DataError``).
    """
    model = report_view_model(recommendations, **options)
    env = _environment()
    env.install_gettext_translations(translations(model["lang"]), newstyle=True)
    html = env.get_template("report.html.j2").render(**model, css=_static("report.css"), js=_static("report.js"))
    leaked = LEARNER_ID.search(html)
    if leaked:
        raise DataError(
            f"the report would show a learner id ({leaked.group(0)[:4]}...); learner ids must never reach a report"
        )
    return html


def _read_table(path: Path) -> pd.DataFrame:
    from research.recommend.inputs import read_table

    return read_table(path)


def _tables_beside(out: Path, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Add the tables an earlier notebook left in the report folder that the caller did not pass:
    ``learning_curves.csv`` (curves with n at every opportunity), ``analyses.csv`` (what was not
    analysed, and why) and, with a predecessor,
    ``recommendation_status.csv`` and ``comparison.csv`` of notebook 07."""
    kwargs = dict(kwargs)
    estimates = dict(kwargs.get("estimates") or {})
    if "learning_curves" not in estimates and (out / "learning_curves.csv").is_file():
        estimates["learning_curves"] = _read_table(out / "learning_curves.csv")
        kwargs["estimates"] = estimates
    if kwargs.get("analyses") is None and (out / "analyses.csv").is_file():
        kwargs["analyses"] = _read_table(out / "analyses.csv")
    if kwargs.get("predecessor") is not None:
        for name, filename in (("status", "recommendation_status.csv"), ("comparison", "comparison.csv")):
            if kwargs.get(name) is None and (out / filename).is_file():
                kwargs[name] = _read_table(out / filename)
    return kwargs


def write_report(
    recommendations: pd.DataFrame,
    out_dir: str | Path,
    *,
    language: str = "en",
    filename: str | None = None,
    min_cell_size: int = 10,
    **kwargs: Any,
) -> dict[str, Path]:
    """Write ``report.<language>.html``, ``recommendations.csv`` and ``recommendations.json``.

    The CSV and JSON carry the same suppression as the HTML: evidence about fewer than
    ``min_cell_size`` learners is empty with its ``suppressed_reason``. Keyword arguments
    go to :func:`render_report`; tables the caller does not pass are read from ``out_dir``
    when an earlier notebook wrote them there (``learning_curves.csv``, and with a
    ``predecessor`` ``recommendation_status.csv`` and ``comparison.csv``). Also writes the folder's
    ``datapackage.json`` (:mod:`research.report.datapackage`). Returns the paths by kind (``html``, ``csv``, ``json``, ``datapackage``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = _tables_beside(out, kwargs)
    html = render_report(recommendations, language=language, min_cell_size=min_cell_size, out_dir=out, **kwargs)
    path = out / (filename or f"report.{language}.html")
    path.write_text(html, encoding="utf-8")
    safe = suppress_records(recommendations, min_cell_size=min_cell_size)
    safe.attrs = dict(recommendations.attrs)
    csv_path, json_path = write_recommendations(safe, out)
    package = write_datapackage(out)
    return {"html": path, "csv": csv_path, "json": json_path, "datapackage": package}
