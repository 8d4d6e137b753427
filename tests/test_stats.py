"""The shared statistics helpers agree with established tools, and the package's import graph stays clean."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from research.errors import MissingColumnError, SchemaError
from research.stats import benjamini_hochberg, cronbach_alpha_feldt, require_columns, wilson_interval

SRC = Path(__file__).resolve().parents[1] / "src"


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


# ------------------------------------------------------------------ import graph

def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "research").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path):
    """(imported module, imported name) pairs of research modules, also from imports inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # annotations only: no import at run time
            continue
        if isinstance(node, ast.Import):
            yield from ((a.name, None) for a in node.names if a.name.split(".")[0] == "research")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "research":
                yield from ((module, a.name) for a in node.names)


# No cycle is tolerated, also none hidden by an import inside a function.
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycles_among_research_modules():
    graph = {m: set() for m in MODULES}
    for m, path in MODULES.items():
        for module, name in _imports(m, path):
            target = f"{module}.{name}" if f"{module}.{name}" in MODULES else module
            if target in MODULES and target != m and not m.startswith(target + "."):
                graph[m].add(target)
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not KNOWN_CYCLES
    assert not cycles, f"import cycles (also through imports inside functions): {cycles}"


# No private name crosses a module boundary (a package's private helper module serves its own package).
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()


def test_no_private_names_are_imported_across_modules():
    found = set()
    for m, path in MODULES.items():
        for module, name in _imports(m, path):
            private = name and name.startswith("_") and not name.startswith("__")
            # a package's private helper module (research.ingest._common) serves its own package only
            if private and not (f"{module}.{name}" in MODULES and m.startswith(module + ".")):
                found.add((m, module, name))
    assert not KNOWN_PRIVATE_IMPORTS
    new = found - KNOWN_PRIVATE_IMPORTS
    assert not new, f"private names imported from another module (make them public or move them): {sorted(new)}"


@pytest.mark.parametrize("module", ["research.stats", "research.errors"])
def test_shared_modules_declare_all(module):
    mod = __import__(module, fromlist=["__all__"])
    assert all(hasattr(mod, n) for n in mod.__all__)
