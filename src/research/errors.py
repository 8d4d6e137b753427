"""The exception hierarchy: every user mistake raises a :class:`ResearchError`.

Messages say what was wrong, the offending value (file, row, column where there is
one), what is valid, and how to fix it. The command line prints the message and
exits with status 1; it never shows a traceback for a ResearchError.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "MissingColumnError", "ResearchError", "SchemaError", "location", "show_value"]


class ResearchError(Exception):
    """Root of every error the package raises on purpose."""


class SchemaError(ResearchError):
    """A table or file does not have the shape its Table Schema requires."""


class MissingColumnError(SchemaError):
    """A table lacks a column the caller named: the one error every missing column raises
    (:func:`research.stats.require_columns`). It is a SchemaError because the table's shape is wrong,
    not its values."""


class DataError(ResearchError):
    """The data itself is unusable: empty, undecodable, or of an unknown format."""


class ConfigError(ResearchError):
    """A configuration value, parameter or option is unknown or out of range."""


def location(file: str | None = None, line: int | None = None, column: str | None = None) -> str:
    """Format a 'file, line, column' prefix for messages; empty parts are left out."""
    parts = []
    if file:
        parts.append(str(file))
    if line is not None:
        parts.append(f"line {line}")
    if column:
        parts.append(f"column {column!r}")
    return ", ".join(parts)


def show_value(value) -> str:
    """repr of an offending cell value for a message, without numpy's type wrapper (np.float64(1.0) -> 1.0)."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    return repr(value)
