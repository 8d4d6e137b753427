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

__all__ = [
    "DEFAULT_REPORTS", "default_warehouse", "notebook_out_dir", "notebooks_dir", "project_root", "resolve",
    "schema_dir",
]

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


DEFAULT_SCRATCH = "scratch"
#: The name of a folder that ``research run`` executes a cohort's notebooks in (``reports/.COHORT.run-<id>``).
RUN_FOLDER_PATTERN = r"^\..+\.run-\d{8}T\d{6}Z-[0-9a-f]{6}$"


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a pipeline run folder (written only by ``research run`` before its swap)."""
    import re

    return re.match(RUN_FOLDER_PATTERN, Path(path).name) is not None


def notebook_out_dir(out_dir: str | os.PathLike[str] | None, cohort: str) -> tuple[Path, str | None]:
    """Where a notebook may write, and a note when that is not where it was asked to write.

    ``reports/`` belongs to ``research run``: a cohort's published report folder is only
    ever replaced by the pipeline's atomic swap. A notebook executed any other way (in
    JupyterLab, by ``papermill`` by hand, under nbval) with an ``out_dir`` inside the
    reports folder, or pointing at a folder that holds a published report (a
    ``manifest.json``), writes to ``scratch/COHORT/`` under the project root instead.
    Pipeline run folders (``reports/.COHORT.run-<id>``) and folders elsewhere are used as
    they are.
    """
    from research.names import cohort_name

    wanted = resolve(out_dir) if out_dir else resolve(Path(DEFAULT_REPORTS) / cohort_name(cohort))
    if is_run_folder(wanted):
        return wanted, None
    reports = resolve(os.environ.get("RESEARCH_REPORTS", DEFAULT_REPORTS)).resolve()
    real = wanted.resolve()
    inside_reports = real == reports or reports in real.parents
    published = (real / "manifest.json").is_file()
    if not inside_reports and not published:
        return wanted, None
    scratch = resolve(os.environ.get("RESEARCH_SCRATCH", DEFAULT_SCRATCH)) / cohort_name(cohort)
    note = (
        f"out_dir {wanted} is {'inside the reports folder' if inside_reports else 'a published report'}, "
        f"which only `research run` writes; this notebook writes to {scratch} instead"
    )
    return scratch, note
