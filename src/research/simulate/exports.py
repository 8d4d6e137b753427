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

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from research.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Iterable

    from research.simulate.cohort import SimulatedCohort

__all__ = ["FORMATS", "write_exports"]

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


def _str(x, n: int | None = None) -> pa.Array:
    """A pyarrow string array from a Series, an array or a scalar (repeated ``n`` times); nulls stay null."""
    if isinstance(x, str):
        return pa.array(np.full(n, x, dtype=object), type=pa.string())
    if isinstance(x, pd.Series):
        x = x.array
    arr = pa.array(x)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if arr.type == pa.string() else pc.cast(arr, pa.string())


def _fmt_time(ts: pd.Series, fmt: str = "%Y-%m-%d %H:%M:%S") -> pa.Array:
    """Timestamps (whole seconds) as text; pyarrow's strftime, vectorised."""
    arr = pa.array(ts.to_numpy(dtype="datetime64[s]"), type=pa.timestamp("s"))
    return pc.strftime(arr, format=fmt)


def _fmt_number(x: pd.Series, missing: str | None = "") -> pa.Array:
    """Numbers as short text: 12 -> '12', 12.5 -> '12.5', NaN -> ``missing`` (None keeps null)."""
    arr = pc.cast(pa.array(x.round(3).to_numpy(dtype=float), from_pandas=True), pa.string())
    return arr if missing is None else pc.fill_null(arr, missing)


def _join(parts: list, sep: str = "") -> pa.Array:
    """Concatenate string arrays and literals element-wise (nulls become empty text)."""
    arrays = [pa.scalar(p, pa.string()) if isinstance(p, str) else p for p in parts]
    return pc.binary_join_element_wise(*arrays, sep, null_handling="replace", null_replacement="")


def _join_rows(columns: list, n: int, sep: str, rows: int = 1_000_000) -> pa.ChunkedArray:
    """One line per row: the columns (arrays of ``n`` or literals) joined by ``sep``, a million rows at a time
    (one string array holds at most 2 GB of text: a DataShop export of 6 million rows is about that)."""
    pieces = [_join([v if isinstance(v, str) else v.slice(lo, rows) for v in columns], sep) for lo in range(0, n, rows)]
    return pa.chunked_array(pieces, pa.string())


def _kc_strings(sim: SimulatedCohort) -> pd.DataFrame:
    """Per step, the KCs of each KC model joined with ``~~`` (a step's KCs are the same on every attempt here)."""
    kcs = sim.attempt_kcs
    per_item = (
        kcs[["attempt_id", "kc_model", "kc"]]
        .merge(sim.attempts[["attempt_id", "step_id"]], on="attempt_id")
        .drop_duplicates(["step_id", "kc_model", "kc"])
    )
    return per_item.groupby(["step_id", "kc_model"], sort=False)["kc"].agg("~~".join).unstack("kc_model")


def _kc_column(sim: SimulatedCohort, kc: pd.DataFrame, model: str) -> pa.Array:
    if model not in kc:
        return _str("", len(sim.attempts))
    return _str(sim.attempts["step_id"].map(kc[model].dropna()).astype("string"))


def _write_lines(path: Path, lines: pa.Array | pa.ChunkedArray, *, header: str | None = None, sep: str = "\n", prefix: str = "", suffix: str = "\n") -> None:
    """Write ``lines`` joined by ``sep`` between ``prefix`` (+ ``header``) and ``suffix``, in chunks."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(prefix)
        if header is not None:
            fh.write(header + ("\n" if len(lines) else ""))
        chunk = 200_000
        for i in range(0, len(lines), chunk):
            if i:
                fh.write(sep)
            fh.write(sep.join(lines.slice(i, chunk).to_pylist()))
        fh.write(suffix)


def write_datashop(sim: SimulatedCohort, path: Path) -> Path:
    """Write the attempts of ``sim`` as a DataShop transaction export (tab-delimited, unquoted)."""
    a = sim.attempts
    n = len(a)
    outcome = a["outcome"].to_numpy(dtype=object)
    is_hint = outcome == "hint"
    lcode = pd.factorize(a["learner_id"])[0].astype(np.int64)
    scode, steps = pd.factorize(a["step_id"])
    key = lcode * max(len(steps), 1) + scode
    start = a["timestamp"].groupby(key).transform("min")
    last = ~pd.Series(key).duplicated(keep="last").to_numpy()
    help_level = pd.Series(is_hint.astype(np.int64)).groupby(key).cumsum().to_numpy()
    kc = _kc_strings(sim)
    hint_mask = pa.array(is_hint)
    help_txt = pc.if_else(hint_mask, pc.cast(pa.array(help_level), pa.string()), "")
    step = _str(a["step_id"])
    columns = {
        "Row": pc.cast(pa.array(np.arange(1, n + 1)), pa.string()),
        "Sample Name": "All Data",
        "Transaction Id": _str(a["attempt_id"]),
        "Anon Student Id": _str(a["learner_id"]),
        "Session Id": _str(a["session_id"]),
        "Time": _fmt_time(a["timestamp"]),
        "Time Zone": "UTC",
        "Duration (sec)": _fmt_number(a["duration_s"], "."),
        "Student Response Type": pc.if_else(hint_mask, "HINT_REQUEST", "ATTEMPT"),
        "Student Response Subtype": "",
        "Tutor Response Type": pc.if_else(hint_mask, "HINT_MSG", "RESULT"),
        "Tutor Response Subtype": "",
        "Level (Module)": _str(a["module"]),
        "Level (Page)": _str(a["page"]),
        "Problem Name": _str(a["item_id"]),
        "Problem View": pc.cast(pa.array(a["problem_view"].fillna(1).to_numpy(dtype=np.int64)), pa.string()),
        "Problem Start Time": _fmt_time(start),
        "Step Name": step,
        "Attempt At Step": pc.cast(pa.array(a["attempt"].to_numpy(dtype=np.int64)), pa.string()),
        "Is Last Attempt": pc.cast(pa.array(last.astype(np.int64)), pa.string()),
        "Outcome": pc.utf8_upper(_str(a["outcome"])),
        "Selection": pc.if_else(hint_mask, "HintButton", _join([step, "_choice"])),
        "Action": pc.if_else(hint_mask, "Click", "UpdateRadioButton"),
        "Input": _str(a["response"]),
        "Feedback Text": pc.if_else(
            hint_mask,
            _join(["Hint ", help_txt, f" of {TOTAL_HINTS}."]),
            pc.if_else(pa.array(outcome == "correct"), "Correct.", "Incorrect."),
        ),
        "Feedback Classification": "",
        "Help Level": help_txt,
        "Total Num Hints": pc.if_else(hint_mask, str(TOTAL_HINTS), ""),
        "KC (Fine)": _kc_column(sim, kc, "Fine"),
        "KC Category (Fine)": "",
        "KC (Coarse)": _kc_column(sim, kc, "Coarse"),
        "KC Category (Coarse)": "",
        "School": SCHOOL,
        "Class": sim.cohort,
    }
    assert tuple(columns) == DATASHOP_COLUMNS
    lines = _join_rows(list(columns.values()), n, "\t")
    _write_lines(path, lines, header="\t".join(DATASHOP_COLUMNS))
    return path


def _json_str(values: pd.Series) -> pa.Array:
    """JSON string literals of a column (json.dumps per distinct value, mapped back)."""
    codes, uniq = pd.factorize(values.astype(object))
    lit = np.array([json.dumps(str(v), ensure_ascii=False) for v in uniq] + ["null"], dtype=object)
    return pa.array(lit[np.where(codes < 0, len(uniq), codes)], type=pa.string())


def xapi_statements(sim: SimulatedCohort) -> pa.Array:
    """One xAPI statement (a JSON text) per attempt of ``sim``, in attempt order."""
    a = sim.attempts
    n = len(a)
    if n == 0:
        return pa.array([], pa.string())
    hexid = _str(a["attempt_id"])
    uuid = _join([pc.utf8_slice_codeunits(hexid, i, j) for i, j in ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))], "-")
    is_hint = pa.array((a["outcome"] == "hint").to_numpy(dtype=bool))
    verb = pc.if_else(
        is_hint,
        '{"id": "http://adlnet.gov/expapi/verbs/asked", "display": {"en-US": "asked"}}',
        '{"id": "http://adlnet.gov/expapi/verbs/answered", "display": {"en-US": "answered"}}',
    )
    dur = _fmt_number(a["duration_s"], None)
    dur_txt = _join(['"duration": "PT', dur, 'S"'])
    has_dur = pc.is_valid(dur)
    success = pc.if_else(pa.array((a["outcome"] == "correct").to_numpy(dtype=bool)), "true", "false")
    answer = _join(['{"success": ', success, ', "response": ', _json_str(a["response"]), pc.if_else(has_dur, _join([", ", dur_txt]), ""), "}"])
    hint = pc.if_else(has_dur, _join(["{", dur_txt, "}"]), "{}")
    result = pc.if_else(is_hint, hint, answer)
    kc = _kc_strings(sim)
    stamp = _fmt_time(a["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
    return _join(
        [
            '{"id": "',
            uuid,
            '", "actor": {"account": {"homePage": "' + XAPI_HOME + '", "name": ',
            _json_str(a["learner_id"]),
            '}}, "verb": ',
            verb,
            ', "object": {"id": ',
            _json_str(XAPI_COURSE + "/items/" + a["item_id"].astype(object)),
            ', "definition": {"type": "http://adlnet.gov/expapi/activities/cmi.interaction", "interactionType": "choice"}}, "result": ',
            result,
            ', "timestamp": "',
            stamp,
            '", "context": {"contextActivities": {"parent": [{"id": ',
            _json_str(XAPI_COURSE + "/pages/" + a["page"].astype(object)),
            '}], "grouping": [{"id": ',
            _json_str(XAPI_COURSE + "/modules/" + a["module"].astype(object)),
            '}]}, "extensions": {"' + XAPI_EXT + '/kc/Fine": ',
            _json_str(pd.Series(_kc_column(sim, kc, "Fine").to_pandas()).fillna("")),
            ', "' + XAPI_EXT + '/kc/Coarse": ',
            _json_str(pd.Series(_kc_column(sim, kc, "Coarse").to_pandas()).fillna("")),
            ', "' + XAPI_EXT + '/attempt": ',
            pc.cast(pa.array(a["attempt"].to_numpy(dtype=np.int64)), pa.string()),
            "}}}",
        ]
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
    frame["Date"] = _fmt_time(a["timestamp"]).to_pandas()
    out["assessments"] = _write_table(frame, directory / "assessments.csv")
    out["assessments_mapping"] = _write_mapping(
        directory / "assessments.mapping.yaml", "assessments", ASSESSMENT_COLUMNS, values={"phase": inv_phase}
    )

    s = sim.surveys
    scale = sorted(set(s["scale_min"].dropna().astype(int))), sorted(set(s["scale_max"].dropna().astype(int)))
    frame = pd.DataFrame({src: s[col] for col, src in SURVEY_COLUMNS.items()})
    frame["Phase"] = s["phase"].map(PHASE_LABELS)
    frame["Reversed"] = np.where(s["reverse_coded"].fillna(False).to_numpy(dtype=bool), "yes", "no")
    frame["Date"] = _fmt_time(s["timestamp"]).to_pandas()
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
            _write_lines(p, statements, suffix="\n" if len(statements) else "")
            paths["xapi"] = p
        if "xapi-json" in formats:
            p = directory / "xapi.json"
            _write_lines(p, statements, sep=",\n", prefix="[\n", suffix="\n]\n")
            paths["xapi_json"] = p
    paths.update(write_tabular(sim, directory))
    return paths
