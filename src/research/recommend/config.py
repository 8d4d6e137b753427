"""Thresholds and switches of the recommendation rules: documented YAML defaults plus overrides.

The defaults live in ``research/config/recommend_defaults.yaml`` (each key is explained
there). A cohort config overrides any subset of them; the merged result is validated
here: unknown keys, wrong types and out-of-range values raise :class:`ConfigError`
naming the bad key and listing the valid ones.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from research.errors import ConfigError

__all__ = ["RecommendConfig", "load_config"]

SEVERITIES = ("high", "medium", "low")
DEFAULTS_RESOURCE = "recommend_defaults.yaml"
PROPORTION_KEYS = ("facility_", "share_", "hint_rate_", "hazard_min", "confidence_", "alpha", "reach_floor", "conclusive_")
COUNT_KEYS = {"min_n", "min_drop", "n_half", "top_n"}


def _read_defaults() -> dict[str, Any]:
    text = resources.files("research.config").joinpath(DEFAULTS_RESOURCE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _read_overrides(overrides: Mapping[str, Any] | str | Path | None) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, (str, Path)):
        path = Path(overrides)
        if not path.is_file():
            raise ConfigError(f"recommendation config file {str(path)!r} does not exist; give a YAML file or a dict")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping of settings at the top, got {type(loaded).__name__}")
        # a cohort config may hold several sections; ours is under "recommend"
        return dict(loaded.get("recommend", loaded))
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"config overrides must be a dict or a YAML path, got {type(overrides).__name__}")
    return dict(overrides)


def _merge(default: Any, override: Any, where: str) -> Any:
    """Deep-merge ``override`` into ``default``, refusing keys the defaults do not have."""
    if isinstance(default, Mapping):
        if not isinstance(override, Mapping):
            raise ConfigError(
                f"{where or 'config'} must be a mapping with keys {sorted(default)}, got {override!r}"
            )
        unknown = sorted(set(override) - set(default))
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} in {where or 'the recommendation config'}; "
                f"valid keys: {sorted(default)}"
            )
        merged = dict(default)
        for key, value in override.items():
            merged[key] = _merge(default[key], value, f"{where}.{key}" if where else str(key))
        return merged
    return override


def _check_value(where: str, default: Any, value: Any) -> None:
    key = where.rsplit(".", 1)[-1]
    if key == "enabled":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif key == "severity":
        if value not in SEVERITIES:
            raise ConfigError(f"{where}={value!r} is not a severity; valid: {list(SEVERITIES)}")
    elif key in ("ci_level", "estimates_ci_level"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ConfigError(f"{where} must be a level strictly between 0 and 1 (for example 0.95), got {value!r}")
    elif key == "kc_model":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be 'auto', 'all' or a KC model name, got {value!r}")
    elif isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if key.startswith(PROPORTION_KEYS) and not 0 <= value <= 1:
            raise ConfigError(f"{where}={value!r} is a proportion; give a value between 0 and 1")
        if key.startswith("discrimination_") and not -1 <= value <= 1:
            raise ConfigError(f"{where}={value!r} is a correlation; give a value between -1 and 1")
        if key in COUNT_KEYS and value < 0:
            raise ConfigError(f"{where}={value!r} must not be negative")
        if key.startswith(("ratio_", "hazard_ratio", "mnsq_", "z_")) and value <= 0:
            raise ConfigError(f"{where}={value!r} must be positive")


def _validate(tree: Mapping[str, Any], defaults: Mapping[str, Any], where: str = "") -> None:
    for key, default in defaults.items():
        here = f"{where}.{key}" if where else key
        value = tree[key]
        if isinstance(default, Mapping):
            _validate(value, default, here)
        else:
            _check_value(here, default, value)


@dataclass(frozen=True)
class RecommendConfig:
    """The validated settings of :func:`research.recommend.recommend`.

    Build it with :meth:`load` (defaults plus optional overrides). ``settings`` is the
    full merged tree (a plain dict, safe to dump to YAML/JSON for provenance).
    """

    settings: dict[str, Any] = field(default_factory=_read_defaults)

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | str | Path | None = None, *,
             kc_model: str | None = None) -> "RecommendConfig":
        """Defaults from ``recommend_defaults.yaml`` merged with ``overrides`` (a dict or a YAML file).

        A YAML file may be a whole cohort config: its ``recommend:`` section is used.
        ``kc_model`` (a cohort file's ``kc_model``) sets the KC model judged, over the overrides.
        """
        defaults = _read_defaults()
        over = dict(_read_overrides(overrides))
        if kc_model is not None:
            over["kc_model"] = kc_model
        merged = _merge(defaults, over, "")
        _validate(merged, defaults)
        return cls(settings=copy.deepcopy(merged))

    @property
    def rules(self) -> dict[str, dict[str, Any]]:
        return self.settings["rules"]

    @property
    def priority(self) -> dict[str, Any]:
        return self.settings["priority"]

    @property
    def ci_level(self) -> float:
        """The level of the intervals the findings carry."""
        return float(self.settings.get("ci_level", 0.95))  # older saved configs have none: they were at 95 %

    @property
    def estimates_ci_level(self) -> float:
        """The level of the intervals in the estimate tables the rules read."""
        return float(self.settings.get("estimates_ci_level", 0.95))

    @property
    def kc_model(self) -> str:
        return self.settings["kc_model"]

    def rule(self, name: str) -> dict[str, Any]:
        try:
            return self.rules[name]
        except KeyError:
            raise ConfigError(f"unknown rule {name!r}; valid rules: {sorted(self.rules)}") from None

    def enabled(self, name: str) -> bool:
        return bool(self.rule(name)["enabled"])


def load_config(overrides: Mapping[str, Any] | str | Path | None = None, *,
                kc_model: str | None = None) -> RecommendConfig:
    """Shorthand for :meth:`RecommendConfig.load`."""
    return RecommendConfig.load(overrides, kc_model=kc_model)
