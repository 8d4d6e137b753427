"""Write a :class:`~research.simulate.cohort.SimulatedCohort` as the raw exports our adapters read.

Formats (``formats=``):

``"datashop"`` -> ``datashop_tx.txt``
    A DataShop transaction export: tab-delimited UTF-8, DataShop's header (``Row``,
    ``Sample Name``, ``Transaction Id``, ``Anon Student Id``, ... ``KC (Fine)``,
    ``KC Category (Fine)``, ``KC (Coarse)``, ``KC Category (Coarse)``, ``School``,
    ``Class``), ``Time`` as ``YYYY-MM-DD HH:MM:SS`` (UTC), ``Outcome`` CORRECT /
    INCORRECT / HINT, ``Student Response Type`` ATTEMPT / HINT_REQUEST, multi-KC cells
    joined with ``~~``, empty cells for missing values and ``.`` for a missing duration.
    ``Input`` is the chosen option; ``Step Name`` equals ``Problem Name`` (single-step items).
``"xapi"`` -> ``xapi.jsonl``
    One xAPI statement per line and attempt (verb ``answered``; hints verb ``asked``),
    KCs and the attempt number as context extensions under
    ``https://w3id.org/xapi/course-research/``.
``"xapi-json"`` -> ``xapi.json``
    The same statements as one JSON array.

Always written: ``assessments.csv``, ``surveys.csv``, ``learners.csv``, ``items.csv`` in
an export-like layout with non-canonical column names, each with a
``<table>.mapping.yaml`` for the tabular adapter (``table``, ``columns`` canonical ->
source, ``values`` maps per canonical column, ``constants``).

All writing is vectorised (string operations on whole columns, ``to_csv``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import yaml

from research.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterable

    from research.simulate.cohort import SimulatedCohort

FORMATS = ("datashop", "xapi", "xapi-json")

#: DataShop transaction export header, in order.
DATASHOP_COLUMNS = (
    "Row",
    "Sample Name",
    "Transaction Id",
    "Anon Student Id",
    "Session Id",
    "Time",
    "Time Zone",
    "Duration (sec)",
    "Student Response Type",
    "Student Response Subtype",
    "Tutor Response Type",
    "Tutor Response Subtype",
    "Level (Module)",
    "Level (Page)",
    "Problem Name",
    "Problem View",
    "Problem Start Time",
    "Step Name",
    "Attempt At Step",
    "Is Last Attempt",
    "Outcome",
    "Selection",
    "Action",
    "Input",
    "Feedback Text",
    "Feedback Classification",
    "Help Level",
    "Total Num Hints",
    "KC (Fine)",
    "KC Category (Fine)",
    "KC (Coarse)",
    "KC Category (Coarse)",
    "School",
    "Class",
)
TOTAL_HINTS = 3
XAPI_HOME = "https://lms.example.org"
XAPI_COURSE = "https://course.example.org"
XAPI_EXT = "https://w3id.org/xapi/course-research"
SCHOOL = "Example Public Employment Agency"

# export-like column names of the tabular files: canonical column -> source column
ASSESSMENT_COLUMNS = {
    "learner_id": "Student",
    "instrument": "Test",
    "module": "Module",
    "phase": "Phase",
    "item_id": "Question",
    "score": "Points",
    "max_score": "Max points",
    "timestamp": "Date",
}
SURVEY_COLUMNS = {
    "learner_id": "Student",
    "phase": "Phase",
    "construct": "Scale",
    "item_id": "Statement",
    "response": "Answer",
    "reverse_coded": "Reversed",
    "timestamp": "Date",
}
LEARNER_COLUMNS = {
    "learner_id": "Student",
    "gender": "Gender",
    "age_band": "Age group",
    "role": "Role",
    "region": "Office region",
    "digital_maturity": "Digital maturity (self-rated)",
}
ITEM_COLUMNS = {
    "item_id": "Item",
    "module": "Module",
    "page": "Page",
    "position": "Position",
    "version": "Version",
    "answer_key": "Key",
    "planned_duration_s": "Planned seconds",
}
PHASE_LABELS = {"pre": "before", "mid": "midway", "post": "after"}
GENDER_LABELS = {"female": "F", "male": "M", "other": "X"}


def _fmt_time(ts: pd.Series, fmt: str = "%Y-%m-%d %H:%M:%S") -> pd.Series:
    return ts.dt.strftime(fmt).astype(object)


def _fmt_number(x: pd.Series, missing: str = "") -> pd.Series:
    """Numbers as short text: 12 -> '12', 12.5 -> '12.5', NaN -> ``missing``."""
    text = x.round(3).astype("string").str.replace(r"\.0$", "", regex=True)
    return text.fillna(missing).astype(object)


def _kc_strings(sim: SimulatedCohort) -> pd.DataFrame:
    """Per attempt, the KCs of each model joined with ``~~`` (vectorised via the item map)."""
    kcs = sim.attempt_kcs
    per_item = (
        kcs[["attempt_id", "kc_model", "kc"]]
        .merge(sim.attempts[["attempt_id", "step_id"]], on="attempt_id")
        .drop_duplicates(["step_id", "kc_model", "kc"])
    )
    per_item = per_item.groupby(["step_id", "kc_model"], sort=False)["kc"].agg("~~".join).unstack("kc_model")
    return per_item


def write_datashop(sim: SimulatedCohort, path: Path) -> Path:
    """Write the attempts of ``sim`` as a DataShop transaction export (tab-delimited)."""
    a = sim.attempts
    n = len(a)
    outcome = a["outcome"].astype(object).to_numpy()
    is_hint = outcome == "hint"
    key = a["learner_id"].astype(object) + "\x1f" + a["step_id"].astype(object)
    start = a.groupby(key.to_numpy(), sort=False)["timestamp"].transform("min")
    last = ~key.duplicated(keep="last").to_numpy()
    help_level = pd.Series(is_hint.astype(int)).groupby(key.to_numpy(), sort=False).cumsum().to_numpy()
    kc = _kc_strings(sim)
    step = a["step_id"].astype(object)
    fine = step.map(kc["Fine"]) if "Fine" in kc else pd.Series("", index=a.index)
    coarse = step.map(kc["Coarse"]) if "Coarse" in kc else pd.Series("", index=a.index)
    empty = np.full(n, "", dtype=object)
    out = pd.DataFrame(
        {
            "Row": np.arange(1, n + 1),
            "Sample Name": "All Data",
            "Transaction Id": a["attempt_id"].astype(object),
            "Anon Student Id": a["learner_id"].astype(object),
            "Session Id": a["session_id"].astype(object).fillna(""),
            "Time": _fmt_time(a["timestamp"]),
            "Time Zone": "UTC",
            "Duration (sec)": _fmt_number(a["duration_s"], "."),
            "Student Response Type": np.where(is_hint, "HINT_REQUEST", "ATTEMPT"),
            "Student Response Subtype": empty,
            "Tutor Response Type": np.where(is_hint, "HINT_MSG", "RESULT"),
            "Tutor Response Subtype": empty,
            "Level (Module)": a["module"].astype(object).fillna(""),
            "Level (Page)": a["page"].astype(object).fillna(""),
            "Problem Name": a["item_id"].astype(object),
            "Problem View": a["problem_view"].astype(object).fillna(1),
            "Problem Start Time": _fmt_time(start),
            "Step Name": step,
            "Attempt At Step": a["attempt"].astype(int),
            "Is Last Attempt": last.astype(int),
            "Outcome": pd.Series(outcome).str.upper(),
            "Selection": np.where(is_hint, "HintButton", (step + "_choice").to_numpy()),
            "Action": np.where(is_hint, "Click", "UpdateRadioButton"),
            "Input": a["response"].astype(object).fillna("").to_numpy(),
            "Feedback Text": np.where(
                is_hint,
                "Hint " + pd.Series(help_level).astype(str).to_numpy(dtype=object) + f" of {TOTAL_HINTS}.",
                np.where(outcome == "correct", "Correct.", "Incorrect."),
            ),
            "Feedback Classification": empty,
            "Help Level": np.where(is_hint, pd.Series(help_level).astype(str).to_numpy(dtype=object), ""),
            "Total Num Hints": np.where(is_hint, str(TOTAL_HINTS), ""),
            "KC (Fine)": fine.fillna("").to_numpy(),
            "KC Category (Fine)": empty,
            "KC (Coarse)": coarse.fillna("").to_numpy(),
            "KC Category (Coarse)": empty,
            "School": SCHOOL,
            "Class": sim.cohort,
        },
        columns=list(DATASHOP_COLUMNS),
    )
    out.to_csv(path, sep="\t", index=False, quoting=csv.QUOTE_NONE, escapechar="\\", lineterminator="\n", encoding="utf-8")
    return path


def _json_str(values: pd.Series) -> pd.Series:
    """JSON string literals of a column (json.dumps per distinct value, mapped back)."""
    values = values.astype(object)
    uniq = pd.unique(values)
    lit = {v: json.dumps(v, ensure_ascii=False) for v in uniq if v is not None and v is not pd.NA}
    return values.map(lit)


def xapi_statements(sim: SimulatedCohort) -> pd.Series:
    """One xAPI statement (a JSON text) per attempt of ``sim``, in attempt order."""
    a = sim.attempts
    hexid = a["attempt_id"].astype(object).str
    uuid = hexid.slice(0, 8) + "-" + hexid.slice(8, 12) + "-" + hexid.slice(12, 16) + "-" + hexid.slice(16, 20) + "-" + hexid.slice(20, 32)
    is_hint = (a["outcome"] == "hint").to_numpy(dtype=bool)
    actor = '{"account": {"homePage": "' + XAPI_HOME + '", "name": ' + _json_str(a["learner_id"]) + "}}"
    verb = np.where(
        is_hint,
        '{"id": "http://adlnet.gov/expapi/verbs/asked", "display": {"en-US": "asked"}}',
        '{"id": "http://adlnet.gov/expapi/verbs/answered", "display": {"en-US": "answered"}}',
    )
    obj = (
        '{"id": '
        + _json_str(XAPI_COURSE + "/items/" + a["item_id"].astype(object))
        + ', "definition": {"type": "http://adlnet.gov/expapi/activities/cmi.interaction", "interactionType": "choice"}}'
    )
    dur = a["duration_s"]
    dur_txt = '"duration": "PT' + _fmt_number(dur) + 'S"'
    has_dur = dur.notna().to_numpy()
    success = np.where(a["outcome"].to_numpy(dtype=object) == "correct", "true", "false")
    answer = '"success": ' + pd.Series(success, index=a.index) + ', "response": ' + _json_str(a["response"].fillna(""))
    result_answer = "{" + answer + np.where(has_dur, ", " + dur_txt, "") + "}"
    result_hint = pd.Series(np.where(has_dur, "{" + dur_txt + "}", "{}"), index=a.index)
    result = pd.Series(np.where(is_hint, result_hint, result_answer), index=a.index)
    kc = _kc_strings(sim)
    step = a["step_id"].astype(object)
    fine = step.map(kc["Fine"]).fillna("") if "Fine" in kc else pd.Series("", index=a.index)
    coarse = step.map(kc["Coarse"]).fillna("") if "Coarse" in kc else pd.Series("", index=a.index)
    context = (
        '{"contextActivities": {"parent": [{"id": '
        + _json_str(XAPI_COURSE + "/pages/" + a["page"].astype(object))
        + '}], "grouping": [{"id": '
        + _json_str(XAPI_COURSE + "/modules/" + a["module"].astype(object))
        + '}]}, "extensions": {"'
        + XAPI_EXT
        + '/kc/Fine": '
        + _json_str(fine)
        + ', "'
        + XAPI_EXT
        + '/kc/Coarse": '
        + _json_str(coarse)
        + ', "'
        + XAPI_EXT
        + '/attempt": '
        + a["attempt"].astype(int).astype(str).astype(object)
        + "}}"
    )
    stamp = _fmt_time(a["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
    return (
        '{"id": "'
        + uuid
        + '", "actor": '
        + actor
        + ', "verb": '
        + pd.Series(verb, index=a.index)
        + ', "object": '
        + obj
        + ', "result": '
        + result
        + ', "timestamp": "'
        + stamp
        + '", "context": '
        + context
        + "}"
    )


def _write_table(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
    return path


def _write_mapping(path: Path, table: str, columns: dict, values: dict | None = None, constants: dict | None = None) -> Path:
    doc: dict = {"table": table, "columns": dict(columns)}
    if values:
        doc["values"] = values
    if constants:
        doc["constants"] = constants
    header = f"# How the tabular adapter maps {path.name.replace('.mapping.yaml', '.csv')} onto the canonical table {table!r}.\n"
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def write_tabular(sim: SimulatedCohort, directory: Path) -> dict[str, Path]:
    """Write assessments, surveys, learners and items as export-like CSV files with their mappings."""
    out: dict[str, Path] = {}
    inv_phase = {v: k for k, v in PHASE_LABELS.items()}

    a = sim.assessments
    frame = pd.DataFrame({src: a[col] for col, src in ASSESSMENT_COLUMNS.items()})
    frame["Phase"] = a["phase"].map(PHASE_LABELS)
    frame["Date"] = _fmt_time(a["timestamp"])
    out["assessments"] = _write_table(frame, directory / "assessments.csv")
    out["assessments_mapping"] = _write_mapping(
        directory / "assessments.mapping.yaml", "assessments", ASSESSMENT_COLUMNS, values={"phase": inv_phase}
    )

    s = sim.surveys
    scale = sorted(set(s["scale_min"].dropna().astype(int))), sorted(set(s["scale_max"].dropna().astype(int)))
    frame = pd.DataFrame({src: s[col] for col, src in SURVEY_COLUMNS.items()})
    frame["Phase"] = s["phase"].map(PHASE_LABELS)
    frame["Reversed"] = np.where(s["reverse_coded"].fillna(False).to_numpy(dtype=bool), "yes", "no")
    frame["Date"] = _fmt_time(s["timestamp"])
    constants = {"scale_min": int(scale[0][0]), "scale_max": int(scale[1][0])} if len(scale[0]) == 1 and len(scale[1]) == 1 else None
    columns = dict(SURVEY_COLUMNS)
    if constants is None:  # several scales: write them as columns
        frame["Scale min"], frame["Scale max"] = s["scale_min"], s["scale_max"]
        columns.update(scale_min="Scale min", scale_max="Scale max")
    out["surveys"] = _write_table(frame, directory / "surveys.csv")
    out["surveys_mapping"] = _write_mapping(
        directory / "surveys.mapping.yaml",
        "surveys",
        columns,
        values={"phase": inv_phase, "reverse_coded": {"yes": True, "no": False}},
        constants=constants,
    )

    lr = sim.learners
    frame = pd.DataFrame({src: lr[col] for col, src in LEARNER_COLUMNS.items()})
    frame["Gender"] = lr["gender"].map(GENDER_LABELS).fillna(lr["gender"])
    out["learners"] = _write_table(frame, directory / "learners.csv")
    out["learners_mapping"] = _write_mapping(
        directory / "learners.mapping.yaml", "learners", LEARNER_COLUMNS, values={"gender": {v: k for k, v in GENDER_LABELS.items()}}
    )

    it = sim.items
    frame = pd.DataFrame({src: it[col] for col, src in ITEM_COLUMNS.items()})
    out["items"] = _write_table(frame, directory / "items.csv")
    types = set(it["item_type"].dropna())
    columns = dict(ITEM_COLUMNS)
    constants = {"item_type": types.pop()} if len(types) == 1 else None
    if constants is None:
        frame["Type"] = it["item_type"]
        columns["item_type"] = "Type"
        _write_table(frame, directory / "items.csv")
    out["items_mapping"] = _write_mapping(directory / "items.mapping.yaml", "items", columns, constants=constants)
    return out


def write_exports(sim: SimulatedCohort, directory: str | Path, *, formats: Iterable[str] = ("datashop",)) -> dict[str, Path]:
    """Write ``sim`` as raw export files under ``directory`` (created if needed).

    Parameters
    ----------
    sim
        The simulated cohort.
    directory
        Folder to write into; existing files of the same names are replaced.
    formats
        Any of ``"datashop"``, ``"xapi"``, ``"xapi-json"`` for the attempts. The
        tabular files (assessments, surveys, learners, items + mappings) are always written.

    Returns
    -------
    dict
        Paths by key: ``datashop``, ``xapi``, ``xapi_json``, ``assessments``,
        ``assessments_mapping``, ``surveys``, ``surveys_mapping``, ``learners``,
        ``learners_mapping``, ``items``, ``items_mapping``.
    """
    if isinstance(formats, str):
        formats = (formats,)
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown export format(s) {', '.join(map(repr, unknown))}; valid: {', '.join(FORMATS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if "datashop" in formats:
        paths["datashop"] = write_datashop(sim, directory / "datashop_tx.txt")
    if "xapi" in formats or "xapi-json" in formats:
        statements = xapi_statements(sim)
        if "xapi" in formats:
            p = directory / "xapi.jsonl"
            p.write_text("\n".join(statements.to_list()) + ("\n" if len(statements) else ""), encoding="utf-8")
            paths["xapi"] = p
        if "xapi-json" in formats:
            p = directory / "xapi.json"
            p.write_text("[\n" + ",\n".join(statements.to_list()) + "\n]\n", encoding="utf-8")
            paths["xapi_json"] = p
    paths.update(write_tabular(sim, directory))
    return paths
