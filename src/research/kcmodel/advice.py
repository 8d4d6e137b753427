"""What the KC-model search adds to the recommendations "No learning" and "Still hard after practice".

The recommendation rules judge a KC's learning curve; when a search over KC models
(:func:`research.kcmodel.search.search`) supports a change of that KC, the course developer
gets the change named: which problems or which factor split the KC.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from research.analyses import N_
from research.kcmodel.search import EXPLANATIONS, explain

__all__ = ["report_changes", "supported_changes", "supported_changes_in", "with_supported_changes"]

RULES = ("kc_no_learning", "kc_still_high", "kc_mixed_skills")


SUPPORTED = N_("A search over KC models (Learning Factors Analysis) supports this change of the KC: {change}")


def supported_changes(recommendations: pd.DataFrame, explanations: pd.DataFrame, *, kc_model: str | None = None,
                      language: str = "en") -> pd.DataFrame:
    """One row per KC recommendation whose KC the search changed: the change in words.

    Parameters
    ----------
    recommendations : output of :func:`research.recommend.recommend`
    explanations : ``SearchResult.explanations`` of a search started from the KC model the
        recommendations judge (``kc_model``: only recommendations of that model are matched)
    language : report language of ``text`` (sv, da, en)

    Returns
    -------
    DataFrame: recommendation_id, rule, kc_model, kc, operator, message (gettext id of the
    change), text (the sentence in ``language``).
    """
    cols = ["recommendation_id", "rule", "kc_model", "kc", "operator", "message", "text"]
    if recommendations is None or explanations is None or recommendations.empty or explanations.empty:
        return pd.DataFrame(columns=cols)
    recs = recommendations[recommendations["rule"].isin(RULES)]
    if kc_model is not None and "kc_model" in recs.columns:
        recs = recs[recs["kc_model"].astype("string") == kc_model]
    from research.report.i18n import translations

    t = translations(language)
    texts = explain(explanations, language)
    rows = []
    for (_, e), change in zip(explanations.iterrows(), texts):
        kcs = {e["kc"]} | ({e["fields"].get("other")} if e["operator"] == "merge" else set())
        for _, r in recs[recs["target_id"].astype(str).isin(kcs)].iterrows():
            rows.append({"recommendation_id": r["recommendation_id"], "rule": r["rule"], "kc_model": r.get("kc_model"),
                         "kc": r["target_id"], "operator": e["operator"], "message": e["message"],
                         "text": t.gettext(SUPPORTED).format(change=change)})
    return pd.DataFrame(rows, columns=cols)


def explanations_from_path(path: pd.DataFrame) -> pd.DataFrame:
    """The explanations of the chosen model's changes, from a ``kc_search`` table (as written)."""
    cols = ["kc", "operator", "message", "fields", "text", "new_kcs"]
    if path is None or path.empty:
        return pd.DataFrame(columns=cols)
    chosen = path.loc[path["chosen"].astype(str).str.lower() == "true", "step"]
    last = int(chosen.iloc[0]) if len(chosen) else 0
    rows = []
    for r in path[(path["step"] > 0) & (path["step"] <= last)].itertuples():
        fields = json.loads(r.explanation_fields) if isinstance(r.explanation_fields, str) and r.explanation_fields else {}
        rows.append({"kc": str(r.kcs).split(" ~~ ")[0], "operator": r.operator, "message": EXPLANATIONS[r.operator],
                     "fields": fields, "text": r.explanation, "new_kcs": r.new_kcs})
    return pd.DataFrame(rows, columns=cols)


def supported_changes_in(recommendations: pd.DataFrame, out_dir, *, language: str = "en") -> pd.DataFrame:
    """:func:`supported_changes` for a report folder: reads ``kc_search.csv`` when notebook 03 wrote it."""
    from research.names import restore_csv

    table = Path(out_dir) / "kc_search.csv"
    if not table.is_file():
        return supported_changes(recommendations, None)
    path = restore_csv(pd.read_csv(table, dtype={"explanation_fields": "string", "explanation": "string",
                                                 "kcs": "string", "new_kcs": "string"}, keep_default_na=False))
    model = str(path["kc_model"].iloc[0]) if len(path) else None
    return supported_changes(recommendations, explanations_from_path(path), kc_model=model, language=language)


def with_supported_changes(recommendations: pd.DataFrame, out_dir) -> pd.DataFrame:
    """The recommendations with ``kc_model_change`` (English) filled for KC findings whose KC the search changed.

    The search is read from ``out_dir/kc_search.csv`` (notebook 03); without it the
    recommendations come back unchanged. :func:`research.report.write_report` then writes
    the change to ``recommendations.csv``/``.json`` and shows it, translated, on the finding's
    card (:func:`report_changes`).
    """
    recs = recommendations.copy()
    recs.attrs = dict(recommendations.attrs)
    if "kc_model_change" not in recs.columns:
        recs["kc_model_change"] = pd.Series(pd.NA, index=recs.index, dtype="string")
    ch = supported_changes_in(recs, out_dir, language="en")
    if len(ch):
        text = ch.groupby("recommendation_id", sort=False)["text"].agg(" ".join)
        found = recs["recommendation_id"].map(text)
        recs["kc_model_change"] = found.where(found.notna(), recs["kc_model_change"]).astype("string")
    return recs


def report_changes(recommendations: pd.DataFrame, out_dir=None, *, language: str = "en") -> dict[str, str]:
    """recommendation_id -> the supported KC-model change in ``language``, for the report.

    Translated from ``out_dir/kc_search.csv`` when the folder has it; otherwise the
    recommendations' own ``kc_model_change`` (English) is shown as it is.
    """
    out = {}
    if "kc_model_change" in recommendations.columns:
        col = recommendations["kc_model_change"].astype("string")
        out = {str(i): str(t) for i, t in zip(recommendations["recommendation_id"], col) if not pd.isna(t) and str(t)}
    if out and out_dir is not None and language != "en":
        ch = supported_changes_in(recommendations[recommendations["recommendation_id"].astype(str).isin(out)], out_dir,
                                  language=language)
        if len(ch):
            out.update(ch.groupby("recommendation_id", sort=False)["text"].agg(" ".join).to_dict())
    return out
