"""The shared statistics helpers agree with established tools (the import graph is checked in test_api.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from research.errors import MissingColumnError, SchemaError
from research.stats import benjamini_hochberg, cronbach_alpha_feldt, require_columns, wilson_interval


def test_wilson_interval_agrees_with_statsmodels():
    rng = np.random.default_rng(1)
    n = rng.integers(1, 400, 300)
    k = rng.binomial(n, rng.uniform(0, 1, 300))
    k[:5], k[5:10] = 0, n[5:10]
    for level in (0.9, 0.95, 0.99):
        lo, hi = wilson_interval(k, n, level)
        ref_lo, ref_hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
        np.testing.assert_allclose(lo, ref_lo, atol=1e-12)
        np.testing.assert_allclose(hi, ref_hi, atol=1e-12)
    assert np.isnan(wilson_interval(0, 0)[0])


def test_benjamini_hochberg_agrees_with_statsmodels_and_keeps_missing_values():
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.uniform(0, 1, 200), rng.uniform(0, 1e-3, 20), [0.5, 0.5, 1.0]])
    np.testing.assert_allclose(benjamini_hochberg(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    out = benjamini_hochberg(pd.Series([0.01, np.nan, 0.04]))
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.04)
    assert np.isnan(benjamini_hochberg([np.nan])).all()


def test_cronbach_alpha_feldt_matches_the_formula_and_recovers_a_known_reliability():
    rng = np.random.default_rng(3)
    true = rng.normal(size=(4000, 1))
    x = true + rng.normal(scale=1.0, size=(4000, 6))  # 6 parallel items, item reliability 0.5
    alpha, lo, hi = cronbach_alpha_feldt(x)
    assert alpha == pytest.approx(6 * 0.5 / (1 + 5 * 0.5), abs=0.01)  # Spearman-Brown: 6/7
    assert lo < alpha < hi
    assert np.isnan(cronbach_alpha_feldt(np.ones((5, 3)))[0])


def test_a_missing_column_raises_one_schema_error_naming_the_argument():
    df = pd.DataFrame({"a": [1]})
    with pytest.raises(MissingColumnError, match=r"t lacks column\(s\) learner='b'; its columns are \['a'\]"):
        require_columns(df, {"learner": "b"}, "t")
    with pytest.raises(SchemaError, match=r"lacks column\(s\) 'b'"):
        require_columns(df, ["a", "b"], "t")
    require_columns(df, ["a"], "t")


@pytest.mark.parametrize("module", ["research.stats", "research.errors"])
def test_shared_modules_declare_all(module):
    mod = __import__(module, fromlist=["__all__"])
    assert all(hasattr(mod, n) for n in mod.__all__)
