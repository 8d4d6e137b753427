"""KC-model files: DataShop's KC-model export/import format and a plain CSV Q-matrix.

Two formats, both reviewable and versionable:

``datashop``
    DataShop's KC-model export (and import) format: tab-delimited, one row per step
    (``Step ID``, ``Problem Hierarchy``, ``Problem Name``, ``Max Problem View``,
    ``Step Name``, per-step statistics, then one ``KC (model)`` column per KC model; a
    multi-KC model repeats its ``KC (model)`` column once per KC of its busiest step, as
    DataShop does). A blank (or whitespace) cell is no KC.
``qmatrix``
    A CSV with the columns ``item_id``, ``step_id`` and ``kc`` (``kc_model`` optional): one
    row per step x KC, so a multi-KC step has several rows. A blank ``step_id`` maps every
    step of the item. Written with :func:`research.names.write_csv` (formula-safe cells).

:func:`read_kc_model_file` reads either into a :class:`KCModelFile`; writing the file it
read back with :func:`write_datashop` gives the same bytes (tested on ds76's exports).
:func:`import_kc_model` adds a file's KC model to a cohort of the warehouse as a new KC
model (rows of ``attempt_kcs``), validated first: duplicate steps, steps the cohort lacks
and an existing model name are refused with the rows named; nothing is replaced without
``replace=True``. :func:`export_kc_model` writes a cohort's KC model(s) in either format.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from research.errors import ConfigError, DataError
from research.names import csv_cell, restore_cell, write_csv

__all__ = [
    "ImportResult", "KCModelFile", "KC_MODEL_FILES_SQL", "export_kc_model", "import_kc_model",
    "read_kc_model_file", "step_kcs", "write_datashop", "write_q_matrix"
]

FORMATS = ("datashop", "qmatrix")
STEP_ID_COLUMNS = ["Step ID", "Problem Hierarchy", "Problem Name", "Max Problem View", "Step Name"]
STAT_COLUMNS = ["Avg Incorrects", "Avg Hints", "Avg Corrects", "% First Attempt Incorrects",
                "% First Attempt Hints", "% First Attempt Corrects", "Avg Step Duration (sec)",
                "Avg Correct Step Duration (sec)", "Avg Error Step Duration (sec)", "Total Students",
                "Total Opportunities"]
_KC_COLUMN = re.compile(r"^KC \((.*)\)$")
QMATRIX_COLUMNS = ["item_id", "step_id", "kc"]
MAX_SHOWN = 10

KC_MODEL_FILES_SQL = """
CREATE TABLE IF NOT EXISTS kc_model_files (
    cohort VARCHAR NOT NULL, kc_model VARCHAR NOT NULL, source_path VARCHAR, file_sha256 VARCHAR,
    file_format VARCHAR, imported_at TIMESTAMP, n_steps BIGINT, n_kcs BIGINT, n_attempt_kcs BIGINT,
    n_steps_without_kc BIGINT, n_unused_steps BIGINT, replaced BOOLEAN,
    PRIMARY KEY (cohort, kc_model))
"""


@dataclass
class KCModelFile:
    """A KC-model file as read: its columns and cells exactly, and the KC models in it.

    ``cells`` holds every cell as text (nothing parsed away), ``header`` the column names
    in file order (DataShop repeats ``KC (model)`` for multi-KC models, so names are not
    unique), ``models`` maps each KC model to the positions of its columns. ``lines`` is the
    file line of each row (the header is line 1).
    """

    path: str
    format: str
    header: list[str]
    cells: list[list[str]]
    models: dict[str, list[int]]
    newline: str = "\n"
    trailing_newline: bool = True
    lines: list[int] = field(default_factory=list)

    def steps(self) -> pd.DataFrame:
        """One row per step of the file: line, hierarchy, item_id, step_id."""
        if self.format == "qmatrix":
            h = {c: i for i, c in enumerate(self.header)}
            return pd.DataFrame({"line": self.lines, "hierarchy": None,
                                 "item_id": [r[h["item_id"]] for r in self.cells],
                                 "step_id": [r[h["step_id"]] for r in self.cells]})
        h = {c: i for i, c in enumerate(self.header)}
        get = lambda col: [r[h[col]] if col in h else None for r in self.cells]  # noqa: E731
        return pd.DataFrame({"line": self.lines, "hierarchy": get("Problem Hierarchy"),
                             "item_id": get("Problem Name"), "step_id": get("Step Name")})

    def qmatrix(self, model: str | None = None) -> pd.DataFrame:
        """The KC model as a long Q-matrix: line, item_id, step_id, kc_model, kc (one row per step x KC).

        Steps without a KC in the model are kept with ``kc`` missing (never dropped).
        """
        models = self.model_names() if model is None else [model]
        for m in models:
            if m not in self.models:
                raise ConfigError(f"{self.path}: KC model {m!r} is not in the file; its KC models are {self.model_names()}.")
        steps = self.steps()
        frames = []
        for m in models:
            if self.format == "qmatrix":
                h = {c: i for i, c in enumerate(self.header)}
                kcs = [[restore_cell(r[h["kc"]]).strip()] for r in self.cells]
            else:
                kcs = [[restore_cell(r[i]).strip() for i in self.models[m]] for r in self.cells]
            rows = []
            for j, ks in enumerate(kcs):
                ks = [k for part in ks for k in part.split("~~")]
                ks = list(dict.fromkeys(k.strip() for k in ks if k.strip()))
                for k in ks or [None]:
                    rows.append((j, k))
            idx = np.array([r[0] for r in rows], dtype=int)
            f = steps.iloc[idx].reset_index(drop=True)
            f["kc_model"] = m
            f["kc"] = [r[1] for r in rows]
            frames.append(f)
        out = pd.concat(frames, ignore_index=True)
        for c in ("item_id", "step_id"):
            out[c] = out[c].map(restore_cell)
        return out

    def model_names(self) -> list[str]:
        return list(self.models)


def _sniff(text: str) -> str:
    first = text.split("\n", 1)[0]
    if "\t" in first and any(_KC_COLUMN.match(c.strip()) for c in first.rstrip("\r").split("\t")):
        return "datashop"
    cols = [c.strip().lower() for c in next(csv.reader([first.rstrip("\r")]), [])]
    if {"item_id", "kc"} <= set(cols):
        return "qmatrix"
    raise DataError(
        "the file is neither a DataShop KC-model export (tab-delimited with 'Problem Name', 'Step Name' and "
        "'KC (model)' columns) nor a Q-matrix CSV (columns item_id, step_id, kc); its first line is "
        f"{first[:200]!r}.")


def read_kc_model_file(path, *, model: str | None = None) -> KCModelFile:
    """Read a KC-model file (DataShop KC-model format or a Q-matrix CSV), validated.

    ``model`` names the KC model of a Q-matrix without a ``kc_model`` column (default: the
    file name without its suffix). Duplicate steps are refused with their lines.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the KC-model file {path}: {exc.strerror or exc}.") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: the KC-model file is not UTF-8 (byte {exc.start}); save it as UTF-8.") from None
    if not text.strip():
        raise DataError(f"{path}: the KC-model file is empty.")
    newline = "\r\n" if text.split("\n", 1)[0].endswith("\r") else "\n"
    fmt = _sniff(text)
    if fmt == "datashop":
        trailing = text.endswith("\n")
        body = text[:-len(newline)] if trailing and text.endswith(newline) else text
        rows = body.split(newline)
        header = rows[0].split("\t")
        cells, lines = [], []
        for i, line in enumerate(rows[1:], start=2):
            parts = line.split("\t")
            if len(parts) != len(header):
                raise DataError(f"{path}, line {i}: {len(parts)} tab-separated fields, the header has {len(header)}; "
                                "a KC-model file has one field per column on every line.")
            cells.append(parts)
            lines.append(i)
        for col in ("Problem Name", "Step Name"):
            if col not in header:
                raise DataError(f"{path}: the DataShop KC-model file has no {col!r} column; its columns are {header[:8]}...")
        models: dict[str, list[int]] = {}
        for i, c in enumerate(header):
            m = _KC_COLUMN.match(c.strip())
            if m:
                models.setdefault(m.group(1), []).append(i)
        kf = KCModelFile(str(path), fmt, header, cells, models, newline, trailing, lines)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise DataError(f"{path}, line {reader.line_num}: {exc}.") from None
        header = [c.strip().lower() for c in rows[0]]
        if "step_id" not in header:
            header.append("step_id")
            rows = [rows[0]] + [r + [""] for r in rows[1:]]
        cells, lines = [], []
        for i, r in enumerate(rows[1:], start=2):
            if not any(x.strip() for x in r):
                continue
            if len(r) != len(rows[0]) + (0 if "step_id" in [c.strip().lower() for c in rows[0]] else 1):
                raise DataError(f"{path}, line {i}: {len(r)} fields, the header has {len(rows[0])}.")
            cells.append(r)
            lines.append(i)
        h = {c: i for i, c in enumerate(header)}
        if "kc_model" in h:
            names = list(dict.fromkeys(restore_cell(r[h["kc_model"]]) for r in cells))
            if len(names) > 1 and model is None:
                raise DataError(f"{path}: the Q-matrix holds {len(names)} KC models {names}; import one file per KC model.")
        name = model or (restore_cell(cells[0][h["kc_model"]]) if "kc_model" in h and cells else path.stem)
        kf = KCModelFile(str(path), fmt, header, cells, {name: [h["kc"]]}, "\n", True, lines)
    _check_duplicates(kf)
    return kf


def _check_duplicates(kf: KCModelFile) -> None:
    s = kf.steps()
    key = ["item_id", "step_id"] if kf.format == "qmatrix" else ["hierarchy", "item_id", "step_id"]
    if kf.format == "qmatrix":
        kcol = kf.header.index("kc")
        s = s.assign(kc=[r[kcol].strip() for r in kf.cells])
        key = key + ["kc"]
    dup = s[s.duplicated(key, keep=False)]
    if len(dup):
        first = dup.groupby(key, dropna=False, sort=False)["line"].apply(list).head(MAX_SHOWN)
        shown = "; ".join(f"problem {k[key.index('item_id')]!r}, step {k[key.index('step_id')]!r} on lines {v}"
                          for k, v in first.items())
        raise DataError(f"{kf.path}: {dup[key].drop_duplicates().shape[0]} step(s) appear more than once ({shown}); "
                        "each step must have exactly one row per KC. Remove the duplicate rows.")


def write_datashop(kf: KCModelFile, path) -> Path:
    """Write a :class:`KCModelFile` in DataShop's KC-model format (tab-delimited, cells as they are)."""
    path = Path(path)
    lines = ["\t".join(kf.header)] + ["\t".join(r) for r in kf.cells]
    text = kf.newline.join(lines) + (kf.newline if kf.trailing_newline else "")
    path.write_text(text, encoding="utf-8", newline="")
    return path


# ---------------------------------------------------------------------------------- warehouse


def cohort_steps(con, cohort: str) -> pd.DataFrame:
    """Steps of a cohort with DataShop's per-step statistics (one row per item x step)."""
    return con.execute(
        """
        WITH ss AS (
            SELECT learner_id, module, page, item_id, step_id, coalesce(problem_view, 1) AS pv,
                   arg_min(outcome, attempt) AS first_outcome,
                   count(*) FILTER (WHERE outcome = 'incorrect') AS inc,
                   count(*) FILTER (WHERE outcome = 'hint') AS hin,
                   count(*) FILTER (WHERE outcome = 'correct') AS cor
            FROM attempts WHERE cohort = ? AND step_id IS NOT NULL
            GROUP BY learner_id, module, page, item_id, step_id, pv)
        SELECT module, page, item_id, step_id, max(pv) AS max_problem_view,
               avg(inc) AS avg_incorrects, avg(hin) AS avg_hints, avg(cor) AS avg_corrects,
               100 * avg(CASE WHEN first_outcome = 'incorrect' THEN 1 ELSE 0 END) AS pct_inc,
               100 * avg(CASE WHEN first_outcome = 'hint' THEN 1 ELSE 0 END) AS pct_hint,
               100 * avg(CASE WHEN first_outcome = 'correct' THEN 1 ELSE 0 END) AS pct_cor,
               count(DISTINCT learner_id) AS n_students, count(*) AS n_opportunities
        FROM ss GROUP BY module, page, item_id, step_id ORDER BY item_id, step_id
        """, [cohort]).df()


def _existing_models(con, cohort: str) -> list[str]:
    return [r[0] for r in con.execute(
        "SELECT DISTINCT kc_model FROM attempt_kcs WHERE cohort = ? ORDER BY 1", [cohort]).fetchall()]


@dataclass
class ImportResult:
    """What :func:`import_kc_model` did: counts and the steps it could not use, named."""

    cohort: str
    kc_model: str
    n_steps: int
    n_kcs: int
    n_attempt_kcs: int
    steps_without_kc: list[tuple[str, str]]
    unused_steps: list[tuple[int, str, str]]
    cohort_steps_not_in_file: list[tuple[str, str]]
    replaced: bool

    def __str__(self) -> str:
        out = [f"KC model {self.kc_model!r} of cohort {self.cohort!r}: {self.n_steps} steps, {self.n_kcs} KCs, "
               f"{self.n_attempt_kcs} attempt x KC rows" + (" (replaced the earlier one)" if self.replaced else "")]
        if self.steps_without_kc:
            out.append(f"{len(self.steps_without_kc)} step(s) have no KC in the file (empty KC cell): "
                       + _list_steps(self.steps_without_kc))
        if self.cohort_steps_not_in_file:
            out.append(f"{len(self.cohort_steps_not_in_file)} step(s) of the cohort are not in the file and have no KC "
                       "in this model: " + _list_steps(self.cohort_steps_not_in_file))
        if self.unused_steps:
            out.append(f"{len(self.unused_steps)} step(s) of the file are not in the cohort and were not used: "
                       + "; ".join(f"line {ln}: {i!r} / {s!r}" for ln, i, s in self.unused_steps[:MAX_SHOWN])
                       + (" ..." if len(self.unused_steps) > MAX_SHOWN else ""))
        return "\n".join(out)


def _list_steps(steps) -> str:
    return "; ".join(f"{i!r} / {s!r}" for i, s in steps[:MAX_SHOWN]) + (" ..." if len(steps) > MAX_SHOWN else "")


def import_kc_model(warehouse, cohort: str, path, *, model: str | None = None, as_name: str | None = None,
                    replace: bool = False, allow_unused_steps: bool = False) -> ImportResult:
    """Add the KC model of a KC-model file to a cohort as a new KC model (rows of ``attempt_kcs``).

    Parameters
    ----------
    warehouse : research.warehouse.Warehouse
    cohort : str
    path : KC-model file (DataShop KC-model format or Q-matrix CSV)
    model : the KC model of the file to import (required when the file holds several)
    as_name : name of the new KC model in the warehouse (default: ``model``)
    replace : replace a KC model of that name (otherwise an existing name is refused)
    allow_unused_steps : import although the file names steps the cohort lacks (they are
        listed in the result); by default such a file is refused with the steps named.
    """
    with warehouse.session(cohort):  # a Parquet store checks the cohort out and writes it back
        return _import_kc_model(warehouse, cohort, path, model=model, as_name=as_name, replace=replace,
                                allow_unused_steps=allow_unused_steps)


def _import_kc_model(warehouse, cohort: str, path, *, model, as_name, replace, allow_unused_steps) -> ImportResult:
    kf = read_kc_model_file(path, model=model)
    names = kf.model_names()
    if model is None:
        if len(names) != 1:
            raise ConfigError(f"{path} holds {len(names)} KC models {names}; pick one with --model (model=...).")
        model = names[0]
    elif model not in names:
        raise ConfigError(f"{path}: KC model {model!r} is not in the file; its KC models are {names}.")
    name = as_name or model
    if not name.strip():
        raise ConfigError("the KC model name is empty; give one with --as NAME.")
    con = warehouse.con
    if not warehouse.has_cohort(cohort):
        raise ConfigError(f"cohort {cohort!r} is not in the warehouse {warehouse.path}; `research cohorts` lists them.")
    existing = _existing_models(con, cohort)
    if name in existing and not replace:
        raise ConfigError(f"cohort {cohort!r} already has a KC model {name!r}; import it under another name "
                          "(--as NAME) or replace it with --replace. Its KC models are " + str(existing) + ".")
    q = kf.qmatrix(model)
    steps = cohort_steps(con, cohort)[["item_id", "step_id"]]
    key_c = set(zip(steps["item_id"], steps["step_id"]))
    by_item = steps.groupby("item_id")["step_id"].apply(list).to_dict()
    # a blank step_id in a Q-matrix maps every step of the item
    blank = q["step_id"].isna() | (q["step_id"].astype(str).str.strip() == "")
    if blank.any():
        expanded = q[blank].copy()
        expanded["step_id"] = expanded["item_id"].map(lambda i: by_item.get(i, [""]))
        expanded = expanded.explode("step_id")
        q = pd.concat([q[~blank], expanded], ignore_index=True)
    in_cohort = np.array([(i, s) in key_c for i, s in zip(q["item_id"], q["step_id"])], dtype=bool)
    unused = q[~in_cohort].drop_duplicates(["item_id", "step_id"])
    unused_list = [(int(r.line), str(r.item_id), str(r.step_id)) for r in unused.itertuples()]
    if unused_list and not allow_unused_steps:
        raise DataError(
            f"{path}: {len(unused_list)} step(s) of KC model {model!r} are not steps of cohort {cohort!r}: "
            + "; ".join(f"line {ln}: problem {i!r}, step {s!r}" for ln, i, s in unused_list[:MAX_SHOWN])
            + (" ..." if len(unused_list) > MAX_SHOWN else "")
            + ". Check that the file belongs to this cohort, or import the other steps anyway with "
              "--allow-unused-steps (they are listed, never silently dropped).")
    q = q[in_cohort]
    no_kc = q[q["kc"].isna()]
    steps_without_kc = list(zip(no_kc["item_id"].astype(str), no_kc["step_id"].astype(str)))
    mapped = q[q["kc"].notna()][["item_id", "step_id", "kc"]]
    in_file = set(zip(q["item_id"], q["step_id"]))
    not_in_file = sorted((str(i), str(s)) for i, s in key_c - in_file)
    if mapped.empty:
        raise DataError(f"{path}: KC model {model!r} gives no step of cohort {cohort!r} a KC; nothing to import.")
    con.execute("BEGIN TRANSACTION")
    try:
        replaced = name in existing
        if replaced:
            con.execute("DELETE FROM attempt_kcs WHERE cohort = ? AND kc_model = ?", [cohort, name])
        con.register("__kcm_map", mapped)
        n = con.execute(
            """INSERT INTO attempt_kcs (cohort, attempt_id, kc_model, kc)
               SELECT DISTINCT a.cohort, a.attempt_id, ?, m.kc FROM attempts a
               JOIN __kcm_map m ON a.item_id = m.item_id AND a.step_id = m.step_id
               WHERE a.cohort = ?""", [name, cohort]).fetchall()[0][0]
        con.unregister("__kcm_map")
        con.execute(KC_MODEL_FILES_SQL)
        con.execute("DELETE FROM kc_model_files WHERE cohort = ? AND kc_model = ?", [cohort, name])
        con.execute("INSERT INTO kc_model_files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [cohort, name, str(Path(path).resolve()), hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                     kf.format, datetime.now(timezone.utc).replace(tzinfo=None), len(in_file),
                     int(mapped["kc"].nunique()), int(n), len(steps_without_kc), len(unused_list), replaced])
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return ImportResult(cohort, name, len(in_file), int(mapped["kc"].nunique()), int(n), steps_without_kc,
                        unused_list, not_in_file, replaced)


def step_kcs(con, cohort: str, models: list[str] | None = None) -> pd.DataFrame:
    """A cohort's KC models per step: item_id, step_id, kc_model, kc (DataShop's per-step KCs).

    A step's KCs are those of its attempts (a model gives every attempt of a step the same
    KCs when it came from a KC-model file; otherwise the union over its attempts).
    """
    where = "" if models is None else f"AND k.kc_model IN ({', '.join('?' * len(models))})"
    return con.execute(
        f"""SELECT DISTINCT a.item_id, a.step_id, k.kc_model, k.kc FROM attempt_kcs k
            JOIN attempts a ON a.cohort = k.cohort AND a.attempt_id = k.attempt_id
            WHERE k.cohort = ? {where} ORDER BY a.item_id, a.step_id, k.kc_model, k.kc""",
        [cohort] + list(models or [])).df()


def _fmt(x, digits=4) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return ""
    if float(x).is_integer():
        return str(int(x))
    return f"{float(x):.{digits}f}".rstrip("0").rstrip(".")


def export_kc_model(warehouse, cohort: str, models, path, *, format: str = "datashop", replace: bool = False) -> Path:
    """Write a cohort's KC model(s) as a KC-model file (DataShop format or a Q-matrix CSV).

    Every step of the cohort gets a row; a step without a KC in a model has an empty cell.
    """
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} is not known; valid formats are {list(FORMATS)}.")
    models = [models] if isinstance(models, str) else list(models)
    path = Path(path)
    if path.exists() and not replace:
        raise ConfigError(f"{path} exists; choose another file or overwrite it with --replace.")
    con = warehouse.con
    existing = _existing_models(con, cohort)
    for m in models:
        if m not in existing:
            raise ConfigError(f"cohort {cohort!r} has no KC model {m!r}; its KC models are {existing}.")
    return write_q_matrix(warehouse, cohort, step_kcs(con, cohort, models), path, format=format, replace=True)


def write_q_matrix(warehouse, cohort: str, kcs: pd.DataFrame, path, *, format: str = "datashop",
                   replace: bool = False) -> Path:
    """Write a Q-matrix (item_id, step_id, kc_model, kc) of a cohort's steps as a KC-model file.

    Every step of the cohort gets a row (with the cohort's per-step statistics in the
    DataShop format); a step without a KC in a model has an empty cell.
    """
    if format not in FORMATS:
        raise ConfigError(f"format={format!r} is not known; valid formats are {list(FORMATS)}.")
    path = Path(path)
    if path.exists() and not replace:
        raise ConfigError(f"{path} exists; choose another file or overwrite it with --replace.")
    models = list(dict.fromkeys(kcs["kc_model"]))
    steps = cohort_steps(warehouse.con, cohort)
    if format == "qmatrix":
        q = steps[["item_id", "step_id"]].merge(kcs, on=["item_id", "step_id"], how="left")
        out = q[q["kc_model"].notna()][["kc_model", "item_id", "step_id", "kc"]]
        if len(models) > 1:
            raise ConfigError("a Q-matrix file holds one KC model; export one --model at a time.")
        write_csv(out.reset_index(drop=True), path)
        return path
    header = list(STEP_ID_COLUMNS) + list(STAT_COLUMNS)
    per = {m: kcs[kcs["kc_model"] == m].groupby(["item_id", "step_id"])["kc"].apply(list).to_dict() for m in models}
    width = {m: max([len(v) for v in per[m].values()] + [1]) for m in models}
    for m in models:
        header += [f"KC ({m})"] * width[m]
    cells = []
    for r in steps.itertuples(index=False):
        hierarchy = ", ".join(x for x in (r.module, r.page) if isinstance(x, str) and x)
        sid = hashlib.md5("\x1f".join([hierarchy, r.item_id, r.step_id]).encode("utf-8")).hexdigest()
        row = [sid, hierarchy, r.item_id, _fmt(r.max_problem_view), r.step_id,
               _fmt(r.avg_incorrects), _fmt(r.avg_hints), _fmt(r.avg_corrects), _fmt(r.pct_inc), _fmt(r.pct_hint),
               _fmt(r.pct_cor), "", "", "", _fmt(r.n_students), _fmt(r.n_opportunities)]
        for m in models:
            ks = per[m].get((r.item_id, r.step_id), [])
            row += ks + [""] * (width[m] - len(ks))
        cells.append([csv_cell(c) if isinstance(c, str) else c for c in row])
    kf = KCModelFile(str(path), "datashop", header, cells, {}, "\n", True)
    return write_datashop(kf, path)
