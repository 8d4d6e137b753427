"""The course developer's report: localised, accessible, self-contained HTML per cohort.

:func:`render_report` / :func:`write_report` turn recommendation records into
``reports/COHORT/report.<lang>.html`` with ``recommendations.csv`` and
``recommendations.json`` beside it. Languages: Swedish, Danish, English
(:data:`LANGUAGES`), through gettext catalogues in ``research/locale``. Small groups are
suppressed by :mod:`research.privacy`.
"""

from research.report.figures import EmbeddedFigure, embed
from research.report.i18n import LANGUAGES, Formatter, make_catalogues, translations
from research.report.refresh import refresh_report
from research.report.render import render_report, report_view_model, write_report
from research.privacy import group_sizes, suppress_records, suppression_mask

__all__ = [
    "LANGUAGES",
    "EmbeddedFigure",
    "Formatter",
    "embed",
    "group_sizes",
    "make_catalogues",
    "refresh_report",
    "render_report",
    "report_view_model",
    "suppress_records",
    "suppression_mask",
    "translations",
    "write_report",
]
