"""The project's own files: dependencies in sync, notebooks stripped, schemas well formed."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI names
CONDA_TO_PYPI = {"python-duckdb": "duckdb"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _bound(requirement: str) -> str | None:
    m = re.search(r">=\s*([0-9][0-9.]*)", requirement)
    return m.group(1) if m else None


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pyproject = {_name(r): _bound(r) for r in project["dependencies"]}
    for extra in ("test", "fast", "lab"):
        pyproject.update({_name(r): _bound(r) for r in project["optional-dependencies"][extra]})
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and _name(dep) not in {"python", "pip"}:
            conda[CONDA_TO_PYPI.get(_name(dep), _name(dep))] = _bound(dep)
        elif isinstance(dep, dict):  # PyPI-only packages under pip:
            conda.update({_name(d): _bound(d) for d in dep.get("pip", []) if not d.startswith("-")})
    assert set(conda) == set(pyproject), (
        f"only in pyproject.toml: {sorted(set(pyproject) - set(conda))}; only in environment.yml: {sorted(set(conda) - set(pyproject))}"
    )
    differ = {k: (pyproject[k], conda[k]) for k in pyproject if pyproject[k] != conda[k]}
    assert not differ, f"lower bounds differ (pyproject, environment.yml): {differ}"


def test_every_dependency_has_a_tested_lower_bound():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    assert all(_bound(r) for r in reqs), [r for r in reqs if not _bound(r)]


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs_and_has_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs; strip them before committing"
    assert "parameters" in code[0].metadata.get("tags", []), f"{path.name}: the first code cell must be tagged 'parameters'"
    for c in code:
        assert not re.search(r"^\s*(def|class)\s", c.source, flags=re.M), f"{path.name}: notebooks hold no def or class; move code to src/research"


def test_notebooks_are_numbered_and_named():
    names = [p.stem for p in NOTEBOOKS]
    assert names and all(re.fullmatch(r"\d\d_[a-z0-9_]+", n) for n in names), names


SCHEMAS = sorted((ROOT / "data_schema").rglob("*.schema.json"))


@pytest.mark.parametrize("path", SCHEMAS, ids=[str(p.relative_to(ROOT / "data_schema")) for p in SCHEMAS])
def test_table_schemas_are_well_formed(path):
    doc = json.loads(path.read_text())
    names = [f["name"] for f in doc["fields"]]
    assert len(names) == len(set(names)), f"duplicate field names in {path.name}"
    valid_types = {"string", "integer", "number", "boolean", "date", "datetime", "any", "object", "array"}
    for f in doc["fields"]:
        assert f.get("type", "string") in valid_types, f
        assert f.get("description"), f"{path.name}: field {f['name']} has no description"
    pk = doc.get("primaryKey", [])
    assert set([pk] if isinstance(pk, str) else pk) <= set(names)


def test_datapackage_lists_the_canonical_schemas_and_they_load():
    from research.schema import canonical_tables, load_schema

    package = json.loads((ROOT / "data_schema" / "datapackage.json").read_text())
    for resource in package["resources"]:
        assert (ROOT / "data_schema" / resource["schema"]).is_file(), resource
    assert set(canonical_tables()) == {r["name"] for r in package["resources"]}
    for name in canonical_tables():
        assert load_schema(name).primary_key, f"canonical table {name} has no primary key"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "RESEARCH_REQUIRE_REAL_DATA=1" in ci
    assert "make test" in readme and "make demo" in readme


# ------------------------------------------------------------------ declared = imported
# Distributions the project needs at run time without importing them from src/research.
RUNTIME_ONLY = {"ipykernel": "the Jupyter kernel papermill starts for the notebooks"}


def _imported_distributions() -> dict[str, set[str]]:
    """Third-party distributions imported anywhere under src/research (also lazily), with the importing files."""
    import ast
    import importlib.metadata as md
    import sys

    top = md.packages_distributions()
    found: dict[str, set[str]] = {}
    for path in (ROOT / "src" / "research").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                first = name.split(".")[0]
                if first in sys.stdlib_module_names or first == "research":
                    continue
                for dist in top.get(first, [first]):
                    found.setdefault(_name(dist), set()).add(str(path.relative_to(ROOT)))
    return found


def test_declared_dependencies_are_the_imported_ones():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for e in ("fast", "lab") for r in project["optional-dependencies"][e]}
    imported = _imported_distributions()
    undeclared = {d: sorted(files) for d, files in imported.items() if d not in core | extras}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    unused = core - set(imported) - set(RUNTIME_ONLY)
    assert not unused, f"declared in pyproject.toml but never imported under src/research: {sorted(unused)}"


def test_major_versions_that_would_break_us_are_capped():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = {_name(r): r for r in project["dependencies"]}
    for name in ("pymc", "arviz", "pytensor"):
        assert "<" in reqs[name], f"{name} needs an upper bound: {reqs[name]}"


def test_package_ships_py_typed():
    assert (ROOT / "src" / "research" / "py.typed").is_file()
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert "src/research" in wheel["packages"]  # hatch ships every file of the package folder, py.typed included
