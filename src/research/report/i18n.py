"""Languages of the report: gettext catalogues (Babel) and locale-aware number and date formats.

Catalogues live in ``research/locale/<lang>/LC_MESSAGES/messages.po`` (English is the
msgid language) and are compiled to ``messages.mo`` beside them; ``make_catalogues()``
recompiles them (``pybabel compile -d src/research/locale`` does the same).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from babel import Locale, dates, numbers
from babel.support import NullTranslations, Translations

from research.errors import ConfigError

__all__ = ["Formatter", "LANGUAGES", "check_language", "locale_dir", "make_catalogues", "translations"]

#: report language -> Babel locale used for numbers and dates
LANGUAGES: dict[str, str] = {"sv": "sv_SE", "da": "da_DK", "en": "en_GB"}
DOMAIN = "messages"


def locale_dir() -> Path:
    return Path(str(resources.files("research").joinpath("locale")))


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ConfigError(f"language={language!r} is not available; valid: {sorted(LANGUAGES)}")
    return language


@cache
def translations(language: str) -> NullTranslations:
    """The compiled catalogue of ``language`` (English falls back to the msgids)."""
    check_language(language)
    mo = locale_dir() / language / "LC_MESSAGES" / f"{DOMAIN}.mo"
    if not mo.is_file():
        if language == "en":
            return NullTranslations()
        raise ConfigError(f"the {language!r} catalogue {mo} is missing; run research.report.i18n.make_catalogues()")
    with mo.open("rb") as fh:
        return Translations(fh, domain=DOMAIN)


def make_catalogues() -> list[Path]:
    """Compile every ``messages.po`` under ``research/locale`` to ``messages.mo`` (for developers)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    written = []
    for po in sorted(locale_dir().glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        with po.open("rb") as fh:
            catalog = read_po(fh, locale=po.parts[-3])
        mo = po.with_suffix(".mo")
        with mo.open("wb") as fh:
            write_mo(fh, catalog, use_fuzzy=False)
        written.append(mo)
    translations.cache_clear()
    return written


@lru_cache(maxsize=8192)
def _decimal(x, fmt: str, locale: str) -> str:
    return numbers.format_decimal(x, format=fmt, locale=locale)


@lru_cache(maxsize=8192)
def _percent(x, fmt: str | None, locale: str) -> str:
    return numbers.format_percent(x, format=fmt, locale=locale)


@cache
def _percent_pattern(locale: str) -> str:
    pattern = Locale.parse(locale).percent_formats[None].pattern
    return pattern.replace("#,##0", "#,##0.0", 1) if "#,##0.0" not in pattern else pattern


@dataclass(frozen=True)
class Formatter:
    """Numbers, percentages, durations and dates in the conventions of one report language."""

    language: str

    @property
    def locale(self) -> str:
        return LANGUAGES[check_language(self.language)]

    @property
    def _percent_pattern(self) -> str:
        return _percent_pattern(self.locale)

    def number(self, x, digits: int = 2) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return ""
        fmt = "#,##0" + ("." + "0" * digits if digits > 0 else "")
        return _decimal(x, fmt, self.locale)  # the same value is formatted many times (ticks, tables)

    def integer(self, x) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return ""
        return _decimal(round(float(x)), "#,##0", self.locale)

    def percent(self, x) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return ""
        return _percent(x, self._percent_pattern, self.locale)

    def percent_whole(self, x) -> str:
        """A percentage without decimals in the locale's pattern (95 %, 95%)."""
        return _percent(x, None, self.locale)

    def p_value(self, p) -> str:
        if p is None or (isinstance(p, float) and math.isnan(p)):
            return ""
        if p < 0.001:
            return "< " + self.number(0.001, 3)
        return self.number(p, 3)

    def duration(self, seconds) -> str:
        if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
            return ""
        return dates.format_timedelta(
            dt.timedelta(seconds=float(seconds)), threshold=1.5, format="long", locale=self.locale
        )

    def date(self, day: dt.date | dt.datetime) -> str:
        return dates.format_date(day, format="long", locale=self.locale)

    def ratio(self, x) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return ""
        return self.number(x, 1) + "\u00a0×"
