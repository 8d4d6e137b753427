"""Names from data are data: never paths, markup, links or spreadsheet formulas.

Cohort, item, KC, page and instrument names come from the user's exports and
configuration. Wherever such a name meets something that interprets it, this module
either checks it or encodes it:

- a **file system** path: only cohort names become path parts (``reports/COHORT/``,
  ``reports/.COHORT.lock``), and only in their canonical form (:func:`cohort_name`);
- a **URL**: :func:`url_path` percent-encodes every part, so a link built from a name is
  always a relative path (``javascript:x`` becomes ``javascript%3Ax``);
- **HTML**: the templates autoescape every value (Jinja2 ``autoescape``);
- **SQL**: names are bound parameters, never pasted into a statement;
- a **CSV cell**: :func:`csv_cell` and :func:`neutralise_csv` prefix a single quote to a
  text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, as
  OWASP's "CSV injection" guidance says, so a spreadsheet shows it as text and never
  runs it as a formula. Numeric columns stay numeric.

The canonical cohort name
-------------------------
A cohort name is 1 to :data:`MAX_NAME_LENGTH` characters (and at most
:data:`MAX_NAME_BYTES` bytes in UTF-8, so that every file name built from it fits the
255-byte limit of common file systems), in Unicode normalisation form NFC (a name in
another form is normalised, so ``å`` typed as one character or as ``a`` plus a ring is
the same cohort). It starts with a letter or a digit and holds only letters, digits,
combining marks, ``-``, ``_``, ``.`` and single inner spaces. Everything else is
refused with a message that says why: ``demo/`` (a trailing slash: write ``demo``),
``../x``, absolute paths, NUL and other control or format characters, overlong names,
and names reserved by Windows (``CON``, ``NUL``, ``COM1`` ...). Two names that differ
only by case (``Demo`` and ``demo``) would share one folder on a case-insensitive file
system, so they share one lock and the second one is refused while the first one has
reports (see :func:`fold`).
"""

from __future__ import annotations

import math
import os
import unicodedata
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from research.errors import ConfigError

__all__ = [
    "FORMULA_PREFIXES", "MAX_NAME_LENGTH", "cohort_name", "csv_cell", "fold", "is_formula", "neutralise_csv",
    "plain_text_figures", "replace_atomically", "restore_cell", "restore_csv", "url_path", "write_csv",
]

MAX_NAME_LENGTH = 100
MAX_NAME_BYTES = 200
#: Characters that make a spreadsheet treat a cell as a formula (OWASP, "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_PUNCTUATION = set("-_.")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


def _show(name: str) -> str:
    """A name as it can be printed safely in a message (control characters escaped, cut short)."""
    text = name.encode("unicode_escape").decode("ascii") if not name.isprintable() else name
    return repr(text if len(text) <= 60 else text[:57] + "...")


def cohort_name(name, *, what: str = "cohort name") -> str:
    """The canonical form of a cohort name, or a :class:`ConfigError` that says what is wrong.

    See the module docstring for the rules. The returned name is NFC-normalised; it is
    safe as one path component, and as text in HTML and CSV (after the usual encoding).
    """
    if not isinstance(name, str):
        raise ConfigError(f"{what} must be text, got {type(name).__name__} {name!r}")
    canonical = unicodedata.normalize("NFC", name)
    if not canonical:
        raise ConfigError(f"{what} is empty; give a name such as 2026-spring")
    if len(canonical) > MAX_NAME_LENGTH or len(canonical.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ConfigError(
            f"{what} {_show(canonical)} is {len(canonical)} characters long; "
            f"the limit is {MAX_NAME_LENGTH} characters ({MAX_NAME_BYTES} bytes in UTF-8)"
        )
    stripped = canonical.rstrip("/\\")
    if stripped != canonical and stripped:
        raise ConfigError(f"{what} {_show(canonical)} ends with a slash; a cohort is a name, not a folder: write {stripped!r}")
    for i, ch in enumerate(canonical):
        category = unicodedata.category(ch)
        if ch in "/\\":
            raise ConfigError(f"{what} {_show(canonical)} contains a path separator ({ch!r}); a cohort is a name, not a path")
        if category[0] == "C" or category in ("Zl", "Zp"):
            raise ConfigError(
                f"{what} {_show(canonical)} contains a control or invisible character (U+{ord(ch):04X}) at position {i + 1}"
            )
        if ch == " ":
            if i == 0 or i == len(canonical) - 1 or canonical[i - 1] == " ":
                raise ConfigError(f"{what} {_show(canonical)} has a space at its start or end, or two spaces in a row")
            continue
        if i == 0 and category[0] not in "LN":
            raise ConfigError(f"{what} {_show(canonical)} must start with a letter or a digit")
        if category[0] not in "LMN" and ch not in _PUNCTUATION:
            raise ConfigError(
                f"{what} {_show(canonical)} contains {ch!r}; use letters, digits, '-', '_', '.' and single spaces"
            )
    if canonical.split(".")[0].casefold() in _WINDOWS_RESERVED:
        raise ConfigError(f"{what} {_show(canonical)} is a device name reserved by Windows; choose another name")
    return canonical


def fold(name: str) -> str:
    """The key under which two cohort names collide on a case-insensitive file system."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())


def url_path(*parts: str) -> str:
    """A relative URL from path parts, each percent-encoded (``/``, ``:``, ``?``, ``#`` included).

    >>> url_path("javascript:alert(1)", "index.html")
    'javascript%3Aalert%281%29/index.html'
    """
    return "/".join(quote(str(p), safe="") for p in parts)


def _needs_quote(text: str) -> bool:
    # a quote is added in front of text that starts like a formula, and in front of text that
    # already starts with quotes followed by a formula prefix, so reading back is exact
    return text.lstrip("'").startswith(FORMULA_PREFIXES)


def csv_cell(value):
    """``value`` with a single quote in front when it is text starting like a formula (OWASP).

    Text that already starts with quotes before a formula prefix gets one more, so
    :func:`restore_cell` gives back exactly the original value.
    """
    if isinstance(value, str) and _needs_quote(value):
        return "'" + value
    return value


def restore_cell(value):
    """The inverse of :func:`csv_cell`, for reading back a table this project wrote."""
    if isinstance(value, str) and value.startswith("'") and _needs_quote(value[1:]):
        return value[1:]
    return value


def _is_text_column(series: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype)


def _map_text(frame: pd.DataFrame, fn) -> pd.DataFrame:
    out = frame.copy()
    for col in out.columns:
        series = out[col]
        if not _is_text_column(series):
            continue
        dtype = series.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            out[col] = series.cat.rename_categories([fn(c) for c in dtype.categories])
            continue
        mapped = series.astype(object).map(fn, na_action="ignore")
        if mapped.equals(series.astype(object)):
            continue
        out[col] = mapped if pd.api.types.is_object_dtype(dtype) else mapped.astype(dtype)
    return out


def neutralise_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells cannot be read as spreadsheet formulas.

    Only text cells change (numbers, booleans, dates and missing values are left as they
    are, so numeric columns stay numeric). Column names are neutralised too.
    """
    out = _map_text(frame, csv_cell)
    out.columns = [csv_cell(c) for c in out.columns]
    return out


def restore_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """The inverse of :func:`neutralise_csv`, for code that reads back a table it wrote."""
    out = _map_text(frame, restore_cell)
    out.columns = [restore_cell(c) for c in out.columns]
    return out


def is_formula(value) -> bool:
    """Whether a CSV cell as read back would start a formula in a spreadsheet."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return isinstance(value, str) and value.startswith(FORMULA_PREFIXES)


def write_csv(frame: pd.DataFrame, path) -> None:
    """Write ``frame`` as a CSV whose text cells are never formulas (:func:`neutralise_csv`).

    Lines end in CRLF (RFC 4180), so Python's writer quotes every cell that holds a
    carriage return or a line feed and a cell's own line breaks never split a row.
    """
    replace_atomically(path, lambda tmp: neutralise_csv(frame).to_csv(tmp, index=False, lineterminator="\r\n"))


def replace_atomically(path, write) -> None:
    """Call ``write(tmp)`` on a hidden file beside ``path``, then rename it onto ``path``.

    A reader (another notebook of the run, checking the folder's tables) sees the old file
    or the new one, never half of one; the temporary name does not end in the table's suffix.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def plain_text_figures() -> None:
    """Make matplotlib draw every label as plain text, never as mathtext.

    A KC or item name such as ``$x^$`` would otherwise be parsed as TeX: drawn as markup,
    or failing the whole figure (and its notebook) with a parse error. Called by
    :func:`research.notebook.setup`, so it holds in every notebook kernel.
    """
    import matplotlib

    matplotlib.rcParams["text.parse_math"] = False
