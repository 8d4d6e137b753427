"""Where things live: the project root, the warehouse, reports, the schema folder.

Relative paths given by users (in notebooks, on the command line, in cohort configs)
are resolved against the project root, so a notebook run by papermill from
``reports/`` and the same notebook opened in JupyterLab from ``notebooks/`` read the
same warehouse. The root is ``$RESEARCH_HOME`` when set, else the nearest folder
upwards from the working directory that holds this project's ``pyproject.toml``,
else the working directory.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

DEFAULT_WAREHOUSE = "data/warehouse.duckdb"
DEFAULT_REPORTS = "reports"


def project_root(start: Path | None = None) -> Path:
    env = os.environ.get("RESEARCH_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "course-research"' in pyproject.read_text(encoding="utf-8"):
            return folder
    return here


def resolve(path: str | os.PathLike[str]) -> Path:
    """Resolve ``path`` against the project root unless it is absolute."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p


def default_warehouse() -> Path:
    return resolve(os.environ.get("RESEARCH_WAREHOUSE", DEFAULT_WAREHOUSE))


@cache
def schema_dir() -> Path:
    """The ``data_schema/`` folder: the source tree's, or the copy inside an installed wheel."""
    source = Path(__file__).resolve().parents[2] / "data_schema"
    if (source / "datapackage.json").is_file():
        return source
    packaged = Path(__file__).resolve().parent / "_data_schema"
    if (packaged / "datapackage.json").is_file():
        return packaged
    raise FileNotFoundError("data_schema/ not found beside the package; reinstall course-research")


def notebooks_dir() -> Path:
    source = Path(__file__).resolve().parents[2] / "notebooks"
    return source if source.is_dir() else project_root() / "notebooks"
