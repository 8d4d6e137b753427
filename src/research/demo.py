"""The demo cohort: a simulated course run written as real exports and ingested.

``research demo`` and every notebook's default parameters use it, so the whole
pipeline runs on a fresh machine with no data of one's own. The raw exports are kept
under ``data/demo/COHORT/`` so the ingest can be read and repeated like any other.
"""

from __future__ import annotations

import os
from pathlib import Path

from research.locks import file_lock
from research.paths import resolve

__all__ = ["DEMO_PAIRS", "DEMO_SETTINGS", "build_demo_cohorts", "ensure_demo"]

#: Demo pairs in the order they are simulated: cohort -> (predecessor, the planted problems its
#: redesign truly fixed, those revised without effect).
DEMO_PAIRS = {
    "demo-2": ("demo", ("too_easy", "miskeyed"), ("dif", "no_learning_kc")),
    "demo-3": ("demo-2", ("no_learning_kc",), ()),
}

#: Settings of the demo cohort: big enough that planted problems show, small enough to run in seconds.
DEMO_SETTINGS = {"n_learners": 400, "seed": 2026}


def raw_dir(cohort: str = "demo") -> Path:
    return resolve(Path("data") / "demo" / cohort)


def write_demo_exports(cohort: str = "demo", directory: str | os.PathLike[str] | None = None, **settings) -> list[Path]:
    """Simulate the demo cohort and write its exports; returns the files to ingest, in order."""
    from research.simulate import simulate_cohort

    sim = simulate_cohort(cohort=cohort, **{**DEMO_SETTINGS, **settings})
    return _write_exports(sim, Path(directory) if directory else raw_dir(cohort))


def _write_exports(sim, directory: Path) -> list[Path]:
    """Write a simulated cohort's exports; the files to ingest, in order."""
    written = sim.write(directory, formats=("datashop", "xapi"))
    return [written[k] for k in ("datashop", "assessments", "surveys", "learners", "items")]


def ensure_demo(warehouse: str | os.PathLike[str], *, cohort: str = "demo", **settings) -> bool:
    """Build the demo cohort into ``warehouse`` unless it is there; True when it was built."""
    from research.store import open_warehouse

    path = resolve(warehouse)
    with file_lock(path.with_name(path.name + ".lock")):
        if path.exists():
            with open_warehouse(path, read_only=True) as wh:
                if wh.has_cohort(cohort):
                    return False
        files = write_demo_exports(cohort, **settings)
        with open_warehouse(path) as wh:
            wh.ingest(files, cohort=cohort)
    return True


def build_demo_cohorts(warehouse=None, *, n_cohorts: int = 1, progress=None) -> list[tuple[str, object]]:
    """Simulate and ingest ``n_cohorts`` successive demo cohorts (``demo``, ``demo-2``, ``demo-3``).

    Each later cohort follows a course redesign in which some of the previous cohort's
    planted problems were truly fixed (see :func:`research.simulate.simulate_followup`).
    Returns (cohort, configuration) pairs to run in order.
    """
    from research.cohort_config import CohortConfig
    from research.errors import ConfigError
    from research.paths import default_warehouse
    from research.simulate import simulate_cohort, simulate_followup
    from research.store import open_warehouse

    if not 1 <= int(n_cohorts) <= 3:
        raise ConfigError(f"--cohorts must be 1, 2 or 3, got {n_cohorts}")
    say = progress or (lambda message: None)
    path = resolve(warehouse) if warehouse else default_warehouse()
    names = ["demo", "demo-2", "demo-3"][: int(n_cohorts)]
    out = []
    with file_lock(path.with_name(path.name + ".lock")):
        sim = simulate_cohort(cohort="demo", **DEMO_SETTINGS)
        fixes = [()] + [fixed for _, fixed, _ in DEMO_PAIRS.values()]  # the demo's redesigns, kept once
        for i, name in enumerate(names):
            if i:
                sim = simulate_followup(sim, fixed=fixes[i], seed=DEMO_SETTINGS["seed"] + i, cohort=name)
            with open_warehouse(path) as wh:
                if not wh.has_cohort(name):
                    say(f"simulating and ingesting demo cohort {name!r} ({len(sim.learners)} learners)")
                    say(str(wh.ingest(_write_exports(sim, raw_dir(name)), cohort=name)))
            out.append((name, CohortConfig(cohort=name, predecessor=names[i - 1] if i else None)))
    return out
