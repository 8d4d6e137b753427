"""The second cell of every notebook: ``ctx = research.notebook.setup(...)``.

:func:`setup` checks the notebook's parameters, makes sure the cohort is in the
warehouse (building the simulated ``demo`` cohort when it is missing, so every notebook
runs as it is in JupyterLab and under nbval), and returns a :class:`Context` that loads
the cohort's tables and writes the notebook's tables and figures beside its HTML.
"""

from __future__ import annotations

import base64
import html
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from research.analyses import REASONS, Record, Skipped
from research.cohort import CohortData, load
from research.errors import ConfigError, SchemaError
from research.locks import folder_lock
from research.names import plain_text_figures, write_csv
from research.paths import default_warehouse, notebook_out_dir, resolve
from research.privacy import protect_table
from research.schedule import NOTEBOOK_TABLES, SHARED_TABLES
from research.schema import output_schema, validate

__all__ = ["Context", "SavedFigure", "setup"]

DEMO_COHORTS = ("demo",)


@dataclass
class SavedFigure:
    """A figure written to disk; shows itself in a notebook as an image with its alt text."""

    path: Path
    alt: str

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.path.read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(self.alt, quote=True)}" style="max-width:100%">'


@dataclass
class Context:
    """What a notebook works with: its cohort's data, its parameters, its output folder."""

    cohort: str
    warehouse: Path
    out_dir: Path
    min_cell_size: int
    params: dict = field(default_factory=dict)
    notebook: str = ""
    #: check each table against the tables already in ``out_dir`` (off only for estimates
    #: that are not published as they are, such as a comparison's inputs)
    protect: bool = True
    _skips: dict = field(default_factory=dict, repr=False)

    @cached_property
    def data(self) -> CohortData:
        """The cohort's canonical tables, each read from the warehouse once, on first use."""
        return load(self.cohort, self.warehouse, lazy=True)

    def write_table(self, frame: pd.DataFrame, name: str) -> Path:
        """Validate ``frame`` against ``data_schema/outputs/NAME.schema.json`` and write ``NAME.csv``.

        Raises :class:`SchemaError` listing the first problems when the frame does not
        match its schema: that is a bug in the code that built it, never the user's.
        """
        declared = NOTEBOOK_TABLES.get(self.notebook)
        if declared is not None and name not in declared and name not in SHARED_TABLES:
            raise SchemaError(
                f"notebook {self.notebook} wrote table {name!r}, which research.schedule.NOTEBOOK_TABLES does not give it: "
                f"notebooks run at the same time must declare their tables ({', '.join(sorted(declared))})"
            )
        schema = output_schema(name)
        missing = [c for c in schema.field_names if c not in frame.columns]
        extra = [c for c in frame.columns if c not in schema.field_names]
        if missing or extra:
            raise SchemaError(
                f"table {name!r} does not match data_schema/outputs/{name}.schema.json: "
                f"missing columns {missing or 'none'}, columns not in the schema {extra or 'none'}"
            )
        with folder_lock(self.out_dir):  # the check against the folder and the write are one step
            if self.protect:
                protect_table(frame, name, self.out_dir, min_cell_size=self.min_cell_size)  # no small group by subtraction across tables
            checked = validate(frame[schema.field_names], schema, source_file=f"{name}.csv")
            if len(checked.rejects):
                first = checked.rejects.head(5)
                problems = "; ".join(f"row {r.source_line - 1}: {r.reason}" for r in first.itertuples())
                raise SchemaError(f"table {name!r}: {len(checked.rejects)} row(s) break its schema: {problems}")
            path = self.out_dir / f"{name}.csv"
            write_csv(frame[schema.field_names], path)
        return path

    def ran(self, analysis: str, reason: str = "", **numbers) -> None:
        """Record that ``analysis`` ran; with a ``reason`` it ran with a fallback (``adapted``)."""
        self._record(Record(self.notebook, analysis, "adapted" if reason else "ran", reason, numbers))

    def skip(self, analysis: str, reason: str, *, detail: str = "", **numbers) -> Skipped:
        """Record that ``analysis`` was skipped and why (a code of :data:`research.analyses.REASONS`).

        Returns what the notebook cell shows: the plain sentence. A skipped analysis is not a failure.
        """
        if reason not in REASONS:
            raise ConfigError(f"unknown reason {reason!r} for a skipped analysis; valid: {', '.join(REASONS)}")
        record = Record(self.notebook, analysis, "skipped", reason, numbers, detail)
        self._record(record)
        self._skips[analysis] = Skipped(record)
        return self._skips[analysis]

    def skipped(self, analysis: str, default=None):
        """The :class:`Skipped` this notebook recorded for ``analysis``, else ``default``."""
        return self._skips.get(analysis, default)

    def analyses(self) -> pd.DataFrame:
        """The record so far (``analyses.csv``): one row per notebook x analysis."""
        path = self.out_dir / "analyses.csv"
        if not path.is_file():
            return pd.DataFrame(columns=output_schema("analyses").field_names)
        return pd.read_csv(path, dtype=str, keep_default_na=False)

    def not_analysed(self, *, all_notebooks: bool = False) -> pd.DataFrame:
        """Analyses skipped or run with a fallback (this notebook's, or the whole run's), with the sentence saying why."""
        table = self.analyses()
        mine = table[((table["notebook"] == self.notebook) | all_notebooks) & (table["status"] != "ran")]
        return mine[["notebook", "analysis", "status", "message"] if all_notebooks else ["analysis", "status", "message"]
                    ].reset_index(drop=True)

    def _record(self, record: Record) -> None:
        with folder_lock(self.out_dir):  # notebooks of one run that run at once share the record
            table = self.analyses()
            table = table[~((table["notebook"] == record.notebook) & (table["analysis"] == record.analysis))]
            table = pd.concat([table, pd.DataFrame([record.row()])], ignore_index=True)
            # by notebook, each in the order it recorded: the same file whichever notebook finished first
            self.write_table(table.sort_values("notebook", kind="stable", ignore_index=True), "analyses")

    def save_figure(self, fig, name: str, *, alt: str) -> SavedFigure:
        """Write ``fig`` to ``figures/NAME.png`` (with its alt text beside it) and close it."""
        import matplotlib.pyplot as plt

        if not alt or not alt.strip():
            raise ConfigError(f"figure {name!r} needs alt text describing what it shows")
        folder = self.out_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        (folder / f"{name}.alt.txt").write_text(alt.strip() + "\n", encoding="utf-8")
        plt.close(fig)
        return SavedFigure(path, alt.strip())


def setup(
    *,
    cohort: str = "demo",
    warehouse: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    min_cell_size: int = 10,
    notebook: str = "",
    **params,
) -> Context:
    """Check a notebook's parameters and return its :class:`Context`.

    ``warehouse`` and ``out_dir`` resolve against the project root; ``out_dir`` defaults to
    ``reports/COHORT``. Extra keyword arguments are the notebook's own parameters and
    end up in ``ctx.params``; ``notebook`` names the notebook in the record of analyses
    that ran or were skipped (``analyses.csv``). For the ``demo`` cohort the simulated demo is built into
    the warehouse when it is not there yet.
    """
    if not isinstance(cohort, str) or not cohort.strip():
        raise ConfigError(f"cohort must be a non-empty string, got {cohort!r}")
    try:
        min_cell_size = int(min_cell_size)
    except (TypeError, ValueError):
        raise ConfigError(f"min_cell_size must be a whole number, got {min_cell_size!r}") from None
    if min_cell_size < 1:
        raise ConfigError(f"min_cell_size must be at least 1, got {min_cell_size}")
    wh_path = resolve(warehouse) if warehouse else default_warehouse()
    plain_text_figures()  # names in figure labels are text, never mathtext
    out, note = notebook_out_dir(out_dir, cohort)
    if note:
        print(note, file=sys.stderr)
    if cohort in DEMO_COHORTS:
        from research.demo import ensure_demo

        ensure_demo(wh_path, cohort=cohort)
    elif not wh_path.exists():
        raise ConfigError(f"warehouse {wh_path} does not exist; load the cohort first with `research ingest PATH --cohort {cohort}`")
    out.mkdir(parents=True, exist_ok=True)
    return Context(cohort=cohort, warehouse=wh_path, out_dir=out, min_cell_size=min_cell_size, params=params,
                   notebook=notebook)
