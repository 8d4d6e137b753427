"""Cohort configuration: one YAML file per cohort, validated with clear errors.

A cohort file (``cohorts/NAME.yaml`` by default) says where the cohort's raw exports
are and how to analyse them::

    cohort: 2026-spring            # cohort id (defaults to the file name)
    sources:                       # raw exports, ingested (idempotently) before each run
      - path: exports/2026-spring/transactions.txt
        format: datashop           # optional: forced format; sniffed when left out
      - path: exports/2026-spring/pretest.csv
        mapping: exports/pretest.mapping.yaml   # optional: column mapping for CSV/Parquet
      - lrs: https://lrs.example.org/xAPI     # an LRS: pulled (research pull) before each run
        options: {profile: torus}
    language: sv                   # report language: sv, da or en
    kc_model: Fine                 # KC model for curves and recommendations (default: best by BIC);
                                   # notebooks 03 and 06 get it as their kc_model parameter
    min_cell_size: 10              # groups smaller than this are suppressed
    predecessor: 2025-autumn       # the cohort before a redesign, for the comparison notebook
    changelog: course/changelog.yaml   # the course change log, for the comparison notebook
    notebook_timeout_s: 1800       # a notebook running longer is stopped
    keep_failed: 3                 # failed run folders kept for debugging (older ones are removed)
    thresholds: {}                 # recommendation thresholds overriding the defaults
    parameters: {}                 # further notebook parameters (for example bayesian: true), each
                                   # declared by some notebook and of its default's type (checked
                                   # before a run starts)
    labels:                        # optional: how the report shows data values
      gender: {female: kvinna, male: man}     # group values of a learner attribute
      attributes: {role: yrkesroll}           # attribute names
      kc_model: {Fine: Detaljerad modell}     # also kc, item, page, module

Relative paths resolve against the folder of the cohort file. Unknown keys are an
error that names them and lists the valid ones. Cohort names (``cohort``, the file
name, ``predecessor``) must be canonical (:func:`research.names.cohort_name`); two files
naming the same cohort (or names that differ only by case) are an error for both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from research.errors import ConfigError
from research.names import cohort_name, fold
from research.paths import resolve

__all__ = [
    "CohortConfig", "LANGUAGES", "Source", "all_configs", "config_dir", "find_config", "load_all", "load_config",
    "parse",
]

LANGUAGES = ("sv", "da", "en")
KEYS = {
    "cohort": "cohort id (defaults to the file name without .yaml)",
    "sources": "list of raw export files (path, optional format, optional mapping)",
    "language": "report language: " + ", ".join(LANGUAGES),
    "kc_model": "KC model to report on: a name, or {name: NAME, file: KC-model file} to import the file as that model before each run",
    "min_cell_size": "smallest group size that is reported",
    "predecessor": "cohort to compare with (before a redesign)",
    "changelog": "course change log (YAML) for the comparison",
    "notebook_timeout_s": "seconds a notebook may run",
    "thresholds": "recommendation threshold overrides",
    "parameters": "further notebook parameters",
    "warehouse": "DuckDB file (default data/warehouse.duckdb)",
    "keep_failed": "failed run folders kept per cohort (default 3)",
    "labels": "report labels for data values: kind (gender, role, attributes, kc_model, ...) -> {value: label}",
}
SOURCE_KEYS = ("path", "format", "mapping", "options", "lrs")
DEFAULT_CONFIG_DIR = "cohorts"


@dataclass
class Source:
    path: Path
    format: str | None = None
    mapping: Path | None = None
    options: dict = field(default_factory=dict)
    lrs: str | None = None  # an xAPI endpoint pulled from (research.lrs) instead of a file


@dataclass
class CohortConfig:
    cohort: str
    sources: list[Source] = field(default_factory=list)
    language: str = "en"
    kc_model: str | None = None
    kc_model_file: Path | None = None  # a KC-model file imported as ``kc_model`` before each run
    min_cell_size: int = 10
    predecessor: str | None = None
    changelog: Path | None = None
    notebook_timeout_s: int = 1800
    thresholds: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    warehouse: Path | None = None
    path: Path | None = None
    keep_failed: int | None = None
    labels: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8") if self.path else ""


def _fail(path, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _sources(given: list, where, rel) -> list[Source]:
    """The ``sources`` of a cohort file: paths, mappings with a ``path``, or LRS endpoints."""
    sources = []
    for i, src in enumerate(given, start=1):
        if isinstance(src, str):
            src = {"path": src}
        if isinstance(src, dict) and "lrs" in src and "path" not in src:
            bad = sorted(set(src) - {"lrs", "options"})
            if bad or not isinstance(src["lrs"], str):
                raise _fail(where, f"LRS source {i} takes 'lrs' (the endpoint URL) and 'options' (profile, xapi_version); found {', '.join(bad) or repr(src['lrs'])}")
            sources.append(Source(Path(), None, None, dict(src.get("options") or {}), lrs=src["lrs"]))
            continue
        if not isinstance(src, dict) or "path" not in src:
            raise _fail(where, f"source {i} must be a path or a mapping with a 'path' (or, for an LRS, a mapping with 'lrs')")
        bad = sorted(set(src) - set(SOURCE_KEYS))
        if bad:
            raise _fail(where, f"source {i} has unknown key(s) {', '.join(bad)}; valid: {', '.join(SOURCE_KEYS)}")
        sources.append(Source(rel(src["path"]), src.get("format"), rel(src["mapping"]) if src.get("mapping") else None, dict(src.get("options") or {})))
    return sources


def _kc_model(kc_model, where, rel) -> tuple[str | None, Path | None]:
    """The ``kc_model`` of a cohort file: a name, or ``{name, file}`` naming a KC-model file to import."""
    kc_model_file = None
    if isinstance(kc_model, dict):
        bad = sorted(set(kc_model) - {"name", "file"})
        if bad or not kc_model.get("file") or not isinstance(kc_model.get("name"), str) or not kc_model["name"].strip():
            raise _fail(where, "kc_model must be a KC model name, or a mapping {name: NAME, file: PATH} naming a "
                               f"KC-model file (DataShop KC-model format or Q-matrix CSV); found {kc_model!r}")
        kc_model, kc_model_file = kc_model["name"], rel(kc_model["file"])
    elif kc_model is not None and (not isinstance(kc_model, str) or not kc_model.strip()):
        raise _fail(where, f"kc_model must be a KC model name or {{name: NAME, file: PATH}}; found {kc_model!r}")
    return kc_model, kc_model_file


def parse(doc: dict, *, path: Path | None = None, name: str | None = None) -> CohortConfig:
    """Validate a cohort configuration mapping (as read from YAML)."""
    where = path or "cohort configuration"
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise _fail(where, f"expected a mapping of keys to values, found {type(doc).__name__}")
    unknown = sorted(set(doc) - set(KEYS))
    if unknown:
        valid = "; ".join(f"{k} ({v})" for k, v in KEYS.items())
        raise _fail(where, f"unknown key(s) {', '.join(map(repr, unknown))}. Valid keys: {valid}")
    base = path.parent if path else Path.cwd()

    def rel(value) -> Path:
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else (base / p)

    cohort = doc.get("cohort", name)
    if not cohort or not isinstance(cohort, str):
        raise _fail(where, "needs a 'cohort' name (a non-empty string)")
    try:
        cohort = cohort_name(cohort)
        predecessor = cohort_name(doc["predecessor"], what="predecessor") if doc.get("predecessor") is not None else None
    except ConfigError as exc:
        raise _fail(where, str(exc)) from None
    sources = _sources(doc.get("sources") or [], where, rel)
    language = doc.get("language", "en")
    if language not in LANGUAGES:
        raise _fail(where, f"language {language!r} is not supported; use one of {', '.join(LANGUAGES)}")
    try:
        min_cell = int(doc.get("min_cell_size", 10))
        timeout = int(doc.get("notebook_timeout_s", 1800))
        keep_failed = int(doc["keep_failed"]) if doc.get("keep_failed") is not None else None
    except (TypeError, ValueError) as exc:
        raise _fail(where, f"min_cell_size, notebook_timeout_s and keep_failed must be whole numbers ({exc})") from None
    if keep_failed is not None and keep_failed < 0:
        raise _fail(where, f"keep_failed must be 0 or more, got {keep_failed}")
    if min_cell < 1:
        raise _fail(where, f"min_cell_size must be at least 1, got {min_cell}")
    if timeout < 1:
        raise _fail(where, f"notebook_timeout_s must be at least 1, got {timeout}")
    for key in ("thresholds", "parameters"):
        if not isinstance(doc.get(key) or {}, dict):
            raise _fail(where, f"{key} must be a mapping")
    kc_model, kc_model_file = _kc_model(doc.get("kc_model"), where, rel)
    labels = doc.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, dict) for v in labels.values()):
        raise _fail(where, "labels must map a kind (gender, role, attributes, kc_model, kc, item, page, module) "
                           "to a mapping of value: label, for example labels: {gender: {female: kvinna}}")
    return CohortConfig(
        cohort=cohort,
        sources=sources,
        language=language,
        kc_model=kc_model,
        kc_model_file=kc_model_file,
        min_cell_size=min_cell,
        predecessor=predecessor,
        changelog=rel(doc["changelog"]) if doc.get("changelog") else None,
        notebook_timeout_s=timeout,
        thresholds=dict(doc.get("thresholds") or {}),
        parameters=dict(doc.get("parameters") or {}),
        warehouse=resolve(doc["warehouse"]) if doc.get("warehouse") else None,
        path=path,
        keep_failed=keep_failed,
        labels={str(k): {str(a): str(b) for a, b in v.items()} for k, v in labels.items()},
    )


def load_config(path: str | os.PathLike[str]) -> CohortConfig:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such cohort configuration file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse(doc, path=path, name=path.stem)


def config_dir(path: str | os.PathLike[str] | None = None) -> Path:
    return resolve(path or os.environ.get("RESEARCH_COHORTS", DEFAULT_CONFIG_DIR))


def load_all(directory: str | os.PathLike[str] | None = None) -> tuple[list[CohortConfig], list[tuple[Path, ConfigError]]]:
    """Every cohort file of the folder: those that load, and (file, error) for those that do not.

    One broken file never hides the others. Two files that name the same cohort (or
    names that differ only by case) are both refused.
    """
    folder = config_dir(directory)
    if not folder.is_dir():
        return [], []
    good: list[CohortConfig] = []
    broken: list[tuple[Path, ConfigError]] = []
    for p in sorted(folder.glob("*.yaml")):
        try:
            good.append(load_config(p))
        except ConfigError as exc:
            broken.append((p, exc))
        except (OSError, UnicodeDecodeError) as exc:
            broken.append((p, ConfigError(f"{p}: cannot be read ({exc})")))
    by_key: dict[str, list[CohortConfig]] = {}
    for cfg in good:
        by_key.setdefault(fold(cfg.cohort), []).append(cfg)
    for same in by_key.values():
        if len(same) > 1:
            files = ", ".join(str(c.path) for c in same)
            for cfg in same:
                good.remove(cfg)
                broken.append((cfg.path, ConfigError(f"{cfg.path}: cohort {cfg.cohort!r} is configured by more than one file "
                                                     f"({files}); names that differ only by case count as the same")))
    return good, broken


def all_configs(directory: str | os.PathLike[str] | None = None) -> list[CohortConfig]:
    """Every cohort file of the folder; the first broken one raises its :class:`ConfigError`."""
    good, broken = load_all(directory)
    if broken:
        raise broken[0][1]
    return good


def find_config(cohort: str, directory: str | os.PathLike[str] | None = None) -> CohortConfig | None:
    """The configuration of ``cohort``; other cohorts' broken files do not matter, its own does."""
    good, broken = load_all(directory)
    for cfg in good:
        if cfg.cohort == cohort:
            return cfg
    for path, exc in broken:
        if fold(Path(path).stem) == fold(cohort) or repr(cohort) in str(exc):
            raise exc
    return None
