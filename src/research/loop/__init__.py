"""Closing the loop: did the redesign between two cohorts work?

* :mod:`research.loop.changelog` — the course change log (YAML): which items were revised,
  added or removed, which KCs were revised, split or merged, which pages revised, when,
  and in answer to which recommendation ids; validated with messages that name the bad values.
* :mod:`research.loop.linking` — both cohorts on one scale: separate Rasch calibrations
  linked (mean/mean) through the anchor items the change log leaves untouched, with drift
  screening and a :class:`LinkingWarning` when there are too few anchors.
* :mod:`research.loop.profile` — one cohort's estimates as a comparison needs them
  (:func:`research.estimates.build_estimates`, the notebooks' steps).
* :mod:`research.loop.demo` — the demo's redesigns (:data:`DEMO_PAIRS`) and their change
  logs; loading the two cohorts for notebook 07.
* :mod:`research.loop.compare` — per changed item, KC and page: the change in difficulty,
  error rate, discrimination, learning rate (AFM slope) and drop-out with Bayesian
  intervals and a verdict (improved, no_detectable_change, worse); the status of every
  recommendation across the cohorts (new, persisting, resolved) by its stable id.

>>> cmp = CohortComparison().fit(before_data, after_data, "course/changelog.yaml")
>>> cmp.summary()                 # comparison.csv
>>> cmp.recommendation_status_    # recommendation_status.csv
"""

from research.loop.changelog import (
    CHANGE_TYPES,
    ChangeLog,
    changelog_dict,
    read_changelog,
    write_changelog,
)
from research.loop.compare import (
    COMPARISON_COLUMNS,
    RULE_METRICS,
    STATUS_COLUMNS,
    TARGET_VERDICTS,
    VERDICTS,
    CohortComparison,
    changelog_from_versions,
    compare_cohorts,
    compare_metrics,
    recommendation_status,
    target_verdicts,
)
from research.loop.demo import DEMO_PAIRS, changelog_for_followup, demo_changelog, ensure_demo_pair, load_pair, resolve_changelog
from research.loop.profile import CohortProfile, comparison_settings, profile_cohort
from research.loop.linking import ANCHOR_COLUMNS, Linking, LinkingWarning, item_covariance, link_difficulties

__all__ = [
    "ANCHOR_COLUMNS",
    "CHANGE_TYPES",
    "COMPARISON_COLUMNS",
    "DEMO_PAIRS",
    "RULE_METRICS",
    "STATUS_COLUMNS",
    "TARGET_VERDICTS",
    "VERDICTS",
    "ChangeLog",
    "CohortComparison",
    "CohortProfile",
    "Linking",
    "LinkingWarning",
    "changelog_dict",
    "changelog_for_followup",
    "changelog_from_versions",
    "compare_cohorts",
    "compare_metrics",
    "comparison_settings",
    "demo_changelog",
    "ensure_demo_pair",
    "item_covariance",
    "link_difficulties",
    "load_pair",
    "profile_cohort",
    "read_changelog",
    "recommendation_status",
    "resolve_changelog",
    "target_verdicts",
    "write_changelog",
]
