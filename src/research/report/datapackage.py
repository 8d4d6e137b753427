"""The ``datapackage.json`` of a report folder: a Frictionless (v1) Tabular Data Package of its CSVs.

Each CSV in the folder becomes a resource with its Table Schema written inline (from
``data_schema/outputs/<name>.schema.json``, or ``data_schema/<name>.schema.json`` for
``recommendations.csv``), so another agency can read and validate the tables with any
Frictionless tool, without our code. A CSV with no published schema is still listed, its
columns typed ``any`` and the resource saying so.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from research.paths import schema_dir

__all__ = ["DATAPACKAGE", "report_datapackage", "write_datapackage"]

DATAPACKAGE = "datapackage.json"


def _schema(stem: str) -> dict | None:
    for path in (schema_dir() / "outputs" / f"{stem}.schema.json", schema_dir() / f"{stem}.schema.json"):
        if path.is_file():
            doc = json.loads(path.read_text(encoding="utf-8"))
            return {k: v for k, v in doc.items() if k not in {"$schema", "name", "title", "description"}}
    return None


def _resource_name(stem: str) -> str:
    name = "".join(c if c.isalnum() or c in "-._" else "-" for c in stem.lower())
    return name or "table"


def report_datapackage(folder: str | Path) -> dict:
    """The Data Package descriptor of the CSVs in ``folder`` (not written)."""
    folder = Path(folder)
    resources = []
    for path in sorted(folder.glob("*.csv")):
        schema = _schema(path.stem)
        resource = {"name": _resource_name(path.stem), "path": path.name, "profile": "tabular-data-resource",
                    "format": "csv", "mediatype": "text/csv", "encoding": "utf-8"}
        if schema is None:
            with path.open(encoding="utf-8", newline="") as f:
                header = next(csv.reader(f), [])
            schema = {"fields": [{"name": h, "type": "any"} for h in header]}
            resource["description"] = "No published Table Schema: the columns are listed untyped."
        resource["schema"] = schema
        resources.append(resource)
    return {
        "profile": "tabular-data-package",
        "name": _resource_name(f"course-research-report-{folder.name}"),
        "title": f"course-research report tables: {folder.name}",
        "description": "The tables of one course-research report, each with its Table Schema. Evidence about "
        "fewer learners than the minimum cell size is empty (see suppressed_cells.csv where present).",
        "resources": resources,
    }


def write_datapackage(folder: str | Path) -> Path:
    """Write ``datapackage.json`` describing the CSVs in ``folder``; returns its path."""
    path = Path(folder) / DATAPACKAGE
    path.write_text(json.dumps(report_datapackage(folder), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
