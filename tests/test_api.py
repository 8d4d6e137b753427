"""``__all__`` is each module's contract: declared on every public module, true, and the only way in;
and the import graph stays clean (no cycles, no private names across modules).

Checked statically (no imports), so the test costs well under a second.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "research").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()
TREES = {m: ast.parse(p.read_text()) for m, p in MODULES.items()}


def _public(module: str) -> bool:
    return not any(part.startswith("_") for part in module.split("."))


def _all(module: str) -> list[str] | None:
    for node in TREES[module].body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def _top_level_names(module: str) -> set[str]:
    names = set()
    for node in TREES[module].body:
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(sub.name)
            elif isinstance(sub, (ast.Assign, ast.AnnAssign)):
                for target in sub.targets if isinstance(sub, ast.Assign) else [sub.target]:
                    names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
            elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                names |= {(a.asname or a.name).split(".")[0] for a in sub.names}
    return names


def _from_imports(tree: ast.AST, package: str):
    """(line, module, name) of every ``from research... import name``, also inside functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module in MODULES:
                yield from ((node.lineno, module, a.name) for a in node.names)


def _violations(tree: ast.AST, where: str, package: str = "") -> list[str]:
    bad = []
    for line, module, name in _from_imports(tree, package):
        parent = module.rpartition(".")[0]
        if f"{module}.{name}" in MODULES or not _public(module) and (where + ".").startswith(parent + "."):
            continue  # a submodule, or a package's private helper module used by its own package
        if name not in (_all(module) or ()):
            bad.append(f"{where}:{line} imports {name} from {module}, which is not in its __all__")
    return bad


def test_every_public_module_declares_all_and_every_name_in_it_exists():
    missing = sorted(m for m in MODULES if _public(m) and _all(m) is None)
    assert not missing, f"modules without __all__: {missing}"
    for m in MODULES:
        declared = _all(m) or []
        assert len(declared) == len(set(declared)), f"{m}.__all__ lists a name twice"
        unknown = [n for n in declared if n not in _top_level_names(m) and f"{m}.{n}" not in MODULES]
        assert not unknown, f"{m}.__all__ names what the module does not define: {unknown}"


def test_modules_import_only_what_another_module_declares_in_all():
    bad = []
    for m, path in MODULES.items():
        package = m if path.name == "__init__.py" else m.rpartition(".")[0]
        bad += _violations(TREES[m], m, package)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_notebooks_use_only_declared_names(notebook):
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    bad = _violations(tree, notebook)
    # attribute access on an imported research module (``steps.item_table``) is an import too
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in MODULES:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                            if f"{node.module}.{a.name}" in MODULES})
        elif isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            module = aliases[node.value.id]
            if node.attr not in (_all(module) or ()) and f"{module}.{node.attr}" not in MODULES:
                bad.append(f"{notebook} uses {module}.{node.attr}, which is not in its __all__")
    assert not bad, "\n".join(bad)


def test_every_interval_level_argument_is_called_ci_level():
    """``level``, ``alpha``, ``hdi_prob``, ... with a default between 0 and 1 name an interval level: it is ``ci_level``."""
    other_names = {"level", "hdi_prob", "level_ci", "conf_level", "confidence_level", "interval", "prob", "cred_mass"}
    bad = []
    for m, tree in TREES.items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name.startswith("_"):
                continue
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for arg, default in pairs:
                value = default.value if isinstance(default, ast.Constant) else None
                if arg.arg in other_names and isinstance(value, float) and 0.5 <= value < 1:
                    bad.append(f"{m}.{node.name}({arg.arg}={value})")
    assert not bad, f"interval levels not called ci_level: {bad}"


# ------------------------------------------------------------------ import graph

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
