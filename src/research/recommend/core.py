"""Estimates in, one ranked list of findings out: :func:`recommend`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import research
from research.errors import ConfigError, DataError, SchemaError
from research.names import restore_csv, write_csv
from research.paths import schema_dir
from research.recommend.config import RecommendConfig
from research.recommend.rule_base import rule_context
from research.recommend.rules import FAMILIES, RULES

__all__ = [
    "priority_score", "read_recommendations", "recommend", "record_columns", "stable_id",
    "validate_recommendations", "write_recommendations",
]

ID_VERSION = "v1"
#: columns added to the record schema after its first version (read as empty from older files)
ADDED_COLUMNS = ("conclusive", "fix_first", "kc_model_change")
#: other names of estimate tables (the notebooks' output names)
ALIASES = {"item_distractors": "distractors", "time": "time_on_task"}


@cache
def record_schema() -> dict[str, Any]:
    """The Table Schema of recommendation records (``data_schema/recommendations.schema.json``)."""
    return json.loads((schema_dir() / "recommendations.schema.json").read_text(encoding="utf-8"))


def record_columns() -> list[str]:
    return [f["name"] for f in record_schema()["fields"]]


def stable_id(rule: Any, target_type: Any, target_id: Any, kc_model: Any = None, detail: Any = None) -> Any:
    """Stable finding id: ``rec_`` + 16 hex digits of SHA-256 over the finding's identity.

    Vectorised: give arrays/Series of equal length and get a list back. Only the rule
    and what it is about enter the hash, never the values, so the same finding on the same
    item keeps its id from cohort to cohort.
    """
    scalar = not isinstance(rule, (list, tuple, np.ndarray, pd.Series))
    cols = [rule, target_type, target_id, kc_model, detail]
    if scalar:
        cols = [[c] for c in cols]
    n = len(cols[0])
    parts = [
        pd.Series(c if c is not None else [None] * n, dtype="object").reset_index(drop=True) for c in cols
    ]
    keys = pd.Series([ID_VERSION] * n, dtype="object")
    for p in parts:
        keys = keys + "|" + p.where(p.notna(), "").astype(str)
    ids = ["rec_" + hashlib.sha256(k.encode("utf-8")).hexdigest()[:16] for k in keys]
    return ids[0] if scalar else ids


def priority_score(severity, confidence, reach, config: RecommendConfig) -> np.ndarray:
    """``100 * severity_weight * confidence * (reach_floor + (1 - reach_floor) * reach)``, in [0, 100].

    ``severity`` in high/medium/low (weights from the config), ``confidence`` and
    ``reach`` in [0, 1]. Missing confidence counts as 0, missing reach as 0.
    """
    weights = config.priority["severity_weights"]
    floor = float(config.priority["reach_floor"])
    sev = pd.Series(severity, dtype="object")
    unknown = sorted(set(sev.dropna()) - set(weights))
    if unknown:
        raise ConfigError(f"unknown severity {unknown}; valid: {sorted(weights)}")
    w = sev.map(weights).to_numpy(dtype=float)
    conf = np.clip(np.nan_to_num(np.asarray(confidence, dtype=float), nan=0.0), 0, 1)
    r = np.clip(np.nan_to_num(np.asarray(reach, dtype=float), nan=0.0), 0, 1)
    return 100.0 * w * conf * (floor + (1 - floor) * r)


def _pick_kc_models(kcs: pd.DataFrame, kc_models: pd.DataFrame | None, choice: str) -> pd.DataFrame:
    if "kc_model" not in kcs.columns or choice == "all":
        return kcs
    models = sorted(kcs["kc_model"].dropna().astype(str).unique())
    if choice == "auto":
        if kc_models is None or "kc_model" not in kc_models.columns:
            return kcs
        for criterion in ("bic", "aic"):
            if criterion in kc_models.columns and kc_models[criterion].notna().any():
                best = kc_models.loc[pd.to_numeric(kc_models[criterion]).idxmin(), "kc_model"]
                return kcs[kcs["kc_model"].astype(str) == str(best)]
        return kcs
    if choice not in models:
        raise ConfigError(f"kc_model={choice!r} is not in the learning-curve table; valid: {['auto', 'all', *models]}")
    return kcs[kcs["kc_model"].astype(str) == choice]


def _has_columns(df: pd.DataFrame, requires: tuple[str, ...]) -> bool:
    return all(col in df.columns for col in requires)


def _contract_view(df: pd.DataFrame, rule, table: str) -> pd.DataFrame:
    """Only the columns the rule declares; a declared numeric column that holds text is refused."""
    declared = rule.columns
    view = df[[c for c in declared if c in df.columns]]
    for col, kind in declared.items():
        if kind not in ("number", "integer") or col not in view.columns:
            continue
        s = view[col]
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        bad = s.notna() & pd.to_numeric(s, errors="coerce").isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"estimate table {table!r}, column {col!r}, row {row}: rule {rule.name!r} reads a {kind} here "
                f"but the value is {s[bad].iloc[0]!r} (see data_schema/outputs/{rule.table}.schema.json)"
            )
    return view


def _conclusive_and_fix_first(result: pd.DataFrame, config: RecommendConfig) -> pd.DataFrame:
    """A finding is conclusive when its evidence clears the threshold (confidence >= conclusive_min).

    An inconclusive finding is never High (its severity drops to medium) and never among
    the ``top_n`` findings to fix first, which are the best-ranked conclusive ones.
    """
    floor = float(config.priority["conclusive_min"])
    conf = result["confidence"].to_numpy(dtype=float, na_value=np.nan)
    conclusive = np.nan_to_num(conf, nan=0.0) >= floor
    result["conclusive"] = conclusive
    result.loc[~conclusive & (result["severity"] == "high"), "severity"] = "medium"
    return result


def recommend(
    estimates: Mapping[str, pd.DataFrame | None],
    config: RecommendConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    cohort: str | None = None,
    n_learners: int | None = None,
) -> pd.DataFrame:
    """Turn estimate tables into one ranked list of findings.

    Parameters
    ----------
    estimates
        Estimate tables by name: ``items`` (classical item statistics and Rasch fit),
        ``distractors``, ``kcs`` (learning-curve categories), ``kc_models`` (fit of each
        KC model, used to choose the model to judge), ``dif``, ``funnel``,
        ``time_on_task``. A rule family runs only when its table is given and a rule
        only when its columns are there; missing or ``None`` tables are skipped.
    config
        A :class:`RecommendConfig`, or overrides of the defaults (a dict or a YAML path).
    cohort
        Cohort id written into every record.
    n_learners
        Learners in the cohort, the denominator of ``reach``; by default the funnel's
        ``n_cohort``, else the largest ``n_affected`` of any finding.

    Returns
    -------
    DataFrame
        One row per finding, ordered by ``rank``, with the columns of
        ``data_schema/recommendations.schema.json``: ``recommendation_id`` (stable
        across cohorts), ``cohort``, ``rank``, ``priority`` (0-100), ``severity``,
        ``confidence``, ``reach``, ``n_affected``, ``rule``, ``family``,
        ``target_type``, ``target_id``, ``kc_model``, ``detail``, ``module``, ``page``,
        the first piece of evidence (``metric``, ``estimate``, ``se``, ``ci_low``,
        ``ci_high``, ``n``, ``threshold_op``, ``threshold``), the second one (the same
        names with ``_2``), ``method`` (how confidence was computed),
        ``suppressed_reason`` (empty here; the report fills it), ``title`` and ``action``
        (English; the report translates them). ``attrs["provenance"]`` holds the package
        version and the full configuration.
    """
    if not isinstance(config, RecommendConfig):
        config = RecommendConfig.load(config)
    tables = _estimate_tables(estimates, config)
    found = _run_rules(tables, config)
    columns = record_columns()
    if not found:
        result = pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in columns})
    else:
        result = pd.concat(found, ignore_index=True)
        for c in columns:
            if c not in result.columns:
                result[c] = np.nan if _dtype(c) == "float64" else None
        result = result[result["target_id"].notna()].reset_index(drop=True)
        result["cohort"] = cohort
        result["recommendation_id"] = stable_id(
            result["rule"], result["target_type"], result["target_id"], result["kc_model"], result["detail"]
        )
        dupes = result["recommendation_id"].duplicated(keep=False)
        if dupes.any():
            raise DataError(
                "two findings share one id (the same rule on the same target twice): "
                f"{result.loc[dupes, ['rule', 'target_type', 'target_id']].drop_duplicates().to_dict('records')[:5]}; "
                "each estimate table must have one row per target"
            )
        result = _ranked(result, tables, config, n_learners)[columns]
    result = _coerce(result)
    result.attrs["provenance"] = {
        "package": "course-research",
        "version": research.__version__,
        "config": config.settings,
        "tables": sorted(tables),
    }
    return result


def _estimate_tables(estimates: Mapping[str, pd.DataFrame | None], config: RecommendConfig) -> dict[str, pd.DataFrame]:
    """The estimate tables by family name (aliases resolved, None left out), the KC model to judge picked."""
    if not isinstance(estimates, Mapping):
        raise DataError(f"estimates must be a dict of DataFrames by table name, got {type(estimates).__name__}")
    estimates = {ALIASES.get(name, name): df for name, df in estimates.items()}
    known = set(FAMILIES) | {"kc_models"}
    unknown = sorted(set(estimates) - known)
    if unknown:
        raise DataError(f"unknown estimate table(s) {unknown}; valid: {sorted(known | set(ALIASES))}")
    tables: dict[str, pd.DataFrame] = {}
    for name, df in estimates.items():
        if df is None:
            continue
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"estimates[{name!r}] must be a DataFrame, got {type(df).__name__}")
        tables[name] = df.reset_index(drop=True)
    if "kcs" in tables:
        tables["kcs"] = _pick_kc_models(tables["kcs"], tables.get("kc_models"), config.kc_model).reset_index(drop=True)
    return tables


def _run_rules(tables: dict[str, pd.DataFrame], config: RecommendConfig) -> list[pd.DataFrame]:
    """Every enabled rule whose table and columns are there, on its declared columns: its findings."""
    ctx = rule_context(config.rules, ci_level=config.ci_level, estimates_ci_level=config.estimates_ci_level)
    found = []
    for rule in RULES.values():
        df = tables.get(rule.family)
        if df is None or not config.enabled(rule.name) or not _has_columns(df, rule.requires) or df.empty:
            continue
        out = rule.func(_contract_view(df, rule, rule.family), config.rule(rule.name), ctx)
        if out.empty:
            continue
        out["rule"] = rule.name
        out["family"] = rule.family
        if "target_type" not in out.columns:
            out["target_type"] = rule.target_type
        out["severity"] = config.rule(rule.name)["severity"]
        out["title"] = rule.title
        out["action"] = rule.action
        found.append(out)
    return found


def _ranked(result: pd.DataFrame, tables: dict[str, pd.DataFrame], config: RecommendConfig,
            n_learners: int | None) -> pd.DataFrame:
    """Reach, confidence, conclusive and priority of every finding; ranked, the first ``top_n`` to fix first."""
    if not n_learners and "funnel" in tables and "n_cohort" in tables["funnel"].columns:
        n_learners = pd.to_numeric(tables["funnel"]["n_cohort"], errors="coerce").max()
        n_learners = None if pd.isna(n_learners) else n_learners  # hidden: reach relative to the largest n_affected
    denom = float(n_learners) if n_learners else np.nanmax(result["n_affected"].to_numpy(dtype=float, na_value=np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        result["reach"] = np.clip(result["n_affected"].to_numpy(dtype=float, na_value=np.nan) / denom, 0, 1)
    result["confidence"] = np.clip(result["confidence"].to_numpy(dtype=float, na_value=np.nan), 0, 1)
    result = _conclusive_and_fix_first(result, config)
    result["priority"] = priority_score(result["severity"], result["confidence"], result["reach"], config)
    sev_order = result["severity"].map({"high": 0, "medium": 1, "low": 2})
    result = (
        result.assign(_sev=sev_order)
        .sort_values(["priority", "_sev", "recommendation_id"], ascending=[False, True, True], kind="mergesort")
        .drop(columns="_sev")
        .reset_index(drop=True)
    )
    result["rank"] = np.arange(1, len(result) + 1)
    top_n = int(config.priority["top_n"])
    eligible = result["conclusive"].to_numpy(dtype=bool) & result["severity"].isin(
        list(config.priority["fix_first_severities"])).to_numpy(dtype=bool)
    first = np.flatnonzero(eligible)[:top_n]
    result["fix_first"] = False
    result.loc[first, "fix_first"] = True
    return result


def _dtype(col: str) -> str:
    types = {f["name"]: f["type"] for f in record_schema()["fields"]}
    return {"number": "float64", "integer": "Int64", "boolean": "boolean"}.get(types.get(col, "string"), "string")


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    out = {}
    for c in df.columns:
        dtype = _dtype(c)
        if dtype == "string":
            s = df[c].astype("object")
            out[c] = s.where(s.notna(), None).astype("string")
        elif dtype == "boolean":
            s = df[c].astype("object")
            s = s.where(s.notna(), None).map(lambda v: v if v is None or isinstance(v, (bool, np.bool_)) else str(v).strip().lower() in ("true", "1"))
            out[c] = s.astype("boolean")
        else:
            out[c] = pd.to_numeric(df[c], errors="coerce").astype(dtype)
    return pd.DataFrame(out, index=df.index)


def validate_recommendations(df: pd.DataFrame) -> pd.DataFrame:
    """Check ``df`` against ``data_schema/recommendations.schema.json``; return it or raise SchemaError.

    Checks the columns (names and order), types, required values, enums, ranges,
    patterns and the primary key, column by column (vectorised).
    """
    schema = record_schema()
    names = [f["name"] for f in schema["fields"]]
    missing = [c for c in names if c not in df.columns]
    extra = [c for c in df.columns if c not in names]
    if missing or extra:
        raise SchemaError(
            f"recommendations: missing column(s) {missing}, unknown column(s) {extra}; the schema's columns are {names}"
        )
    problems = []
    for f in schema["fields"]:
        col, cons = f["name"], f.get("constraints", {})
        s = df[col]
        present = s.notna()
        if f["type"] in ("number", "integer"):
            num = pd.to_numeric(s, errors="coerce")
            bad = present & num.isna()
            if bad.any():
                problems.append(f"column {col!r}: non-numeric value {s[bad].iloc[0]!r} at row {int(bad.idxmax())}")
            if f["type"] == "integer":
                frac = present & num.notna() & (num != np.floor(num))
                if frac.any():
                    problems.append(f"column {col!r}: non-integer {num[frac].iloc[0]!r}")
            for key, op in (("minimum", np.less), ("maximum", np.greater)):
                if key in cons:
                    out_of = num.notna() & op(num, cons[key])
                    if out_of.any():
                        problems.append(f"column {col!r}: {num[out_of].iloc[0]!r} breaks {key} {cons[key]}")
        else:
            txt = s.astype("object")
            if "enum" in cons:
                bad = present & ~txt.isin(cons["enum"])
                if bad.any():
                    problems.append(f"column {col!r}: {txt[bad].iloc[0]!r} is not one of {cons['enum']}")
            if "pattern" in cons:
                bad = present & ~txt.astype(str).str.fullmatch(cons["pattern"])
                if bad.any():
                    problems.append(f"column {col!r}: {txt[bad].iloc[0]!r} does not match {cons['pattern']}")
        if cons.get("required") and (~present).any():
            problems.append(f"column {col!r}: required but empty at row {int((~present).idxmax())}")
    key = schema.get("primaryKey", [])
    if key and df.duplicated(key).any():
        problems.append(f"primary key {key}: duplicated {df.loc[df.duplicated(key), key].iloc[0].tolist()}")
    if problems:
        raise SchemaError("recommendations do not match data_schema/recommendations.schema.json: " + "; ".join(problems))
    return df


def write_recommendations(df: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """Validate and write ``recommendations.csv`` and ``recommendations.json`` into ``out_dir``.

    The JSON holds ``{"schema": "recommendations", "provenance": ..., "records": [...]}``
    with records of the same fields as the CSV (empty values as null).
    """
    validate_recommendations(df)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "recommendations.csv", out / "recommendations.json"
    write_csv(df, csv_path)
    records = json.loads(df.to_json(orient="records", force_ascii=False, double_precision=15))
    payload = {
        "schema": "recommendations",
        "schema_path": "data_schema/recommendations.schema.json",
        "provenance": _jsonable(df.attrs.get("provenance", {})),
        "records": records,
    }
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return csv_path, json_path


def read_recommendations(path: str | Path) -> pd.DataFrame:
    """Read ``recommendations.csv`` or ``.json`` back into a validated frame."""
    path = Path(path)
    if path.suffix == ".json":
        payload = json.loads(path.read_text(encoding="utf-8"))
        df = pd.DataFrame.from_records(payload["records"], columns=record_columns())
    else:
        df = restore_csv(pd.read_csv(path, dtype={c: "string" for c in record_columns() if _dtype(c) == "string"}, keep_default_na=False, na_values=[""]))
    for col in ADDED_COLUMNS:  # files written before these columns existed
        if col not in df.columns and set(record_columns()) - set(df.columns) <= set(ADDED_COLUMNS):
            df[col] = pd.NA
    return validate_recommendations(_coerce(df[record_columns()] if set(record_columns()) <= set(df.columns) else df))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
