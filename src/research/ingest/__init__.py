"""Ingest: one adapter per source format turns one file into canonical tables.

>>> from research.ingest import read_file
>>> from research.pseudonym import Pseudonymiser
>>> result = read_file("ds96_tx_export.txt", cohort="2024-spring", pseudonymiser=Pseudonymiser())  # doctest: +SKIP
>>> result.tables["attempts"], result.rejects                                                     # doctest: +SKIP

Formats (``FORMATS``):

``datashop``
    DataShop transaction export (tab-delimited), :mod:`research.ingest.datashop_tx`.
``datashop-step``
    DataShop student-step export, :mod:`research.ingest.datashop_step`.
``xapi``
    xAPI statements from an LRS (JSON array, JSON lines or ``{"statements": [...]}``),
    :mod:`research.ingest.xapi`.
``datashop-xml``
    DataShop tutor-message XML (Torus's DataShop export, OLI logs), streamed,
    :mod:`research.ingest.datashop_xml`.
``oli-log-act``
    OLI's legacy ``log_act`` table dump whose tutor-message rows hold DataShop XML,
    :mod:`research.ingest.oli_log_act`.
``csv``, ``parquet``
    any canonical table from a plain CSV or Parquet file plus a YAML column mapping,
    :mod:`research.ingest.tabular`.

File-level problems raise before any row is read: a missing or empty file, bytes that
are not UTF-8 (the whole file is refused, with the line and byte offset of the first bad
byte; see :mod:`research.ingest._common`), the wrong delimiter, missing required
columns, an unknown or ambiguous format. Row-level problems become rejects.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from research.errors import ConfigError, DataError
from research.ingest import datashop_step, datashop_tx, datashop_xml, oli_log_act, tabular, wide, xapi
from research.ingest._common import read_head
from research.ingest.base import IngestResult, make_rejects

FORMATS: dict[str, ModuleType] = {
    datashop_tx.NAME: datashop_tx,
    datashop_step.NAME: datashop_step,
    xapi.NAME: xapi,
    "csv": tabular,
    "parquet": tabular,
    datashop_xml.NAME: datashop_xml,
    oli_log_act.NAME: oli_log_act,
}

__all__ = ["FORMATS", "IngestResult", "make_rejects", "read_file", "sniff"]


def sniff(path, *, encoding: str = "utf-8") -> str:
    """The format name of ``path``; DataError naming the file when unknown or ambiguous."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".gz"):
        head = ""  # binary: the adapters that read these look inside themselves
        if not path.exists():
            raise DataError(f"{path}: file not found")
    else:
        head = read_head(path, encoding)
    found = []
    for name, module in FORMATS.items():
        if module is tabular:
            continue
        if module.sniff(path, head):
            found.append(name)
    if tabular.sniff(path, head):
        found.append(tabular.format_for(path))
    if len(found) == 1:
        return found[0]
    known = ", ".join(FORMATS)
    if not found and "Anon Student Id" in head.split("\n", 1)[0]:
        raise DataError(
            f"{path.name}: a DataShop export of a kind we do not read (a problem or student rollup?); "
            "export the transactions (format datashop) or the student-step rollup (format datashop-step) instead. "
            f"Known formats: {known}"
        )
    if not found:
        raise DataError(
            f"{path.name}: unknown format; known formats: {known}. A plain CSV/Parquet file needs a "
            f"column mapping beside it ({path.stem}.mapping.yaml) or --mapping FILE; "
            "or name the format with --format NAME"
        )
    raise DataError(f"{path.name}: ambiguous format, it looks like {' and '.join(found)}; name one with --format NAME (known formats: {known})")


def read_file(path, *, cohort: str, pseudonymiser, format: str | None = None, options: dict | None = None) -> IngestResult:
    """Read one file into canonical tables (learner ids pseudonymised) plus rejects.

    ``format`` forces the adapter (see ``FORMATS``); by default the format is sniffed.
    ``options`` go to the adapter, e.g. ``{"mapping": "scores.mapping.yaml"}`` for csv,
    ``{"kc_extensions": {...}}`` for xapi, ``{"module_level": "path"}`` for datashop.
    """
    path = Path(path)
    if not cohort or not isinstance(cohort, str):
        raise ConfigError(f"cohort must be a non-empty string, got {cohort!r}")
    if format is None and (options or {}).get("mapping"):  # a mapping only fits csv or parquet
        format = tabular.format_for(path)
    if format is None:
        format = sniff(path, encoding=(options or {}).get("encoding", "utf-8"))
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; known formats: {', '.join(FORMATS)}")
    module = FORMATS[format]
    if module is tabular:
        # a mapping with a `wide:` block: one row per learner, one column per item
        reader = wide if wide.is_wide((options or {}).get("mapping"), path) else tabular
        return reader.read(path, cohort=cohort, pseudonymiser=pseudonymiser, options=options, format=format)
    return module.read(path, cohort=cohort, pseudonymiser=pseudonymiser, options=options)
