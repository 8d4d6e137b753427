"""Evidence in, advice out: rules turn estimate tables into ranked recommendation records.

>>> from research.recommend import recommend, load_config
>>> recs = recommend({"items": items, "kcs": kcs, "dif": dif}, load_config({"rules": {"too_easy": {"facility_min": 0.95}}}))

Each rule family (:data:`research.recommend.rules.RULES`) reads one estimate table and
runs only when that table is given. Thresholds and switches come from
``research/config/recommend_defaults.yaml``, overridable per cohort. Every record has a
stable id, its evidence with uncertainty and n, the threshold that fired, a suggested
action and a priority score that ranks all findings in one list (formula in the YAML
file and in :func:`priority_score`). :func:`write_recommendations` writes the CSV and
JSON beside the report, validated against ``data_schema/recommendations.schema.json``.
"""

from research.recommend.config import RecommendConfig, load_config
from research.recommend.core import (
    priority_score,
    read_recommendations,
    recommend,
    record_columns,
    stable_id,
    validate_recommendations,
    write_recommendations,
)
from research.recommend.inputs import ESTIMATE_FILES, load_estimates
from research.recommend.rule_base import Rule
from research.recommend.rules import FAMILIES, RULES

__all__ = [
    "ESTIMATE_FILES",
    "FAMILIES",
    "RULES",
    "RecommendConfig",
    "Rule",
    "load_config",
    "load_estimates",
    "priority_score",
    "read_recommendations",
    "recommend",
    "record_columns",
    "stable_id",
    "validate_recommendations",
    "write_recommendations",
]
