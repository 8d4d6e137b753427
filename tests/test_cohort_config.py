"""Cohort configuration files (research.cohort_config)."""

from __future__ import annotations

import pytest

from research.cohort_config import all_configs, load_config, parse
from research.errors import ConfigError


def test_a_full_configuration_parses_and_paths_resolve_beside_the_file(tmp_path):
    path = tmp_path / "2026-spring.yaml"
    path.write_text(
        "sources:\n  - path: exports/tx.txt\n    format: datashop\n  - path: exports/pre.csv\n    mapping: exports/pre.mapping.yaml\n"
        "language: sv\nkc_model: Fine\nmin_cell_size: 12\npredecessor: 2025-autumn\nthresholds: {too_easy_facility: 0.95}\n"
        "parameters: {bayesian: true}\n"
    )
    cfg = load_config(path)
    assert cfg.cohort == "2026-spring"  # from the file name
    assert cfg.sources[0].path == tmp_path / "exports" / "tx.txt" and cfg.sources[0].format == "datashop"
    assert cfg.sources[1].mapping == tmp_path / "exports" / "pre.mapping.yaml"
    assert (cfg.language, cfg.kc_model, cfg.min_cell_size, cfg.predecessor) == ("sv", "Fine", 12, "2025-autumn")
    assert cfg.parameters == {"bayesian": True}
    assert [c.cohort for c in all_configs(tmp_path)] == ["2026-spring"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"cohort": "c", "langauge": "sv"}, r"unknown key\(s\) 'langauge'\. Valid keys: cohort"),
        ({"cohort": "c", "language": "fi"}, "language 'fi' is not supported; use one of sv, da, en"),
        ({"cohort": "c", "min_cell_size": 0}, "min_cell_size must be at least 1"),
        ({"cohort": "c", "min_cell_size": "ten"}, "must be whole numbers"),
        ({"cohort": "c", "sources": [{"file": "x"}]}, "source 1 must be a path or a mapping with a 'path'"),
        ({"cohort": "c", "sources": [{"path": "x", "fmt": "csv"}]}, r"source 1 has unknown key\(s\) fmt; valid: path, format, mapping, options"),
        ({"language": "sv"}, "needs a 'cohort' name"),
        ({"cohort": "c", "thresholds": [1, 2]}, "thresholds must be a mapping"),
    ],
)
def test_bad_configuration_names_the_problem_and_what_is_valid(doc, message):
    with pytest.raises(ConfigError, match=message):
        parse(doc)


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sources: [unclosed\n")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML"):
        load_config(path)
