"""Which notebooks of a cohort run may run at the same time, and how many at once.

A run's notebooks publish into one folder, and the small-cell protection
(:func:`research.privacy.protect_table`) checks each new table against the tables already
there. So a notebook may only run beside another when nothing it computes or hides can
depend on the other's tables:

- each reads the warehouse and the tables of notebooks before its set, never a table of
  the other;
- no learner count in one's tables can be combined with a count in the other's: the sets
  of learners they count (the ``where`` literals of their schemas' ``learner_count``
  declarations) are never nested, so no difference between them is ever derivable, and
  the same cells are hidden whichever notebook finishes first.

:data:`CONCURRENT` lists such sets; ``tests/test_schedule.py`` checks the second condition
on the schemas of the tables in :data:`NOTEBOOK_TABLES`, and
:meth:`research.notebook.Context.write_table` refuses a table that a notebook of a set is
not declared to write, so the declaration cannot drift from what the notebooks do. A run
with two notebooks at a time gives the same tables as one at a time (a test compares them).
"""

from __future__ import annotations

import os

__all__ = [
    "CONCURRENT", "NOTEBOOK_GB_BASE", "NOTEBOOK_GB_PER_MILLION", "NOTEBOOK_TABLES", "SHARED_TABLES", "available_gb",
    "check_jobs", "default_jobs", "two_at_once_gb", "waits_for",
]

#: Notebooks that may run at the same time as one another (see the module docstring).
CONCURRENT: tuple[frozenset[str], ...] = (
    frozenset({"02_item_analysis", "03_learning_curves", "04_learning_gains"}),
)

#: The tables each notebook of a concurrent set writes (``Context.write_table`` refuses others).
NOTEBOOK_TABLES: dict[str, frozenset[str]] = {
    "02_item_analysis": frozenset({"items", "item_distractors"}),
    "03_learning_curves": frozenset({"kc_models", "kcs", "learning_curves", "kc_search", "mastery", "student_models"}),
    "04_learning_gains": frozenset({"attrition", "gains", "ancova", "surveys", "survey_items", "survey_waves",
                                    "survey_invariance"}),
}

#: Tables every notebook adds its own rows to, under the folder's lock: the record of
#: analyses (one row per notebook x analysis) and the record of hidden cells (one block
#: per table). Both are written in a fixed order (by notebook; by table), not in the order
#: the notebooks finished.
SHARED_TABLES = frozenset({"analyses", "suppressed_cells"})


def waits_for(notebooks: list[str]) -> dict[str, frozenset[str]]:
    """For each notebook of a run (names in run order), the notebooks that must finish before it starts.

    Every notebook before it, except those of its own concurrent set.
    """
    out = {}
    for i, name in enumerate(notebooks):
        peers = next((s for s in CONCURRENT if name in s), frozenset())
        out[name] = frozenset(n for n in notebooks[:i] if n not in peers)
    return out


#: Peak memory of the largest notebook (03) of a run, in GB: a base and a slope per million
#: attempts (measured with benchmarks/bench_scale.py --end-to-end: 10.3 GB at 6.06 million; docs/SCALE.md).
NOTEBOOK_GB_BASE = 0.4
NOTEBOOK_GB_PER_MILLION = 1.65


def available_gb() -> float:
    """Memory the machine has available now (``MemAvailable``), in GB; half the physical memory where that is not known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2e9
    except (ValueError, OSError, AttributeError):
        return 4.0


def two_at_once_gb(n_attempts: int) -> float:
    """About the memory two of a cohort's notebooks need at once (twice the largest's peak), in GB."""
    return 2 * (NOTEBOOK_GB_BASE + NOTEBOOK_GB_PER_MILLION * n_attempts / 1e6)


def default_jobs(n_attempts: int | None = None, *, say=None) -> int:
    """Notebooks one cohort run runs at once by default.

    2 where the machine has two cores or more and, for a cohort of ``n_attempts``, two
    notebooks at once fit in four fifths of the memory available (:func:`two_at_once_gb`); else 1. A
    large cohort that fits one notebook at a time is not put at risk by running two; when
    memory is the reason, ``say`` (if given) gets a sentence that says so.
    ``RESEARCH_NOTEBOOK_JOBS`` overrides it (checked like ``--jobs``).
    """
    given = os.environ.get("RESEARCH_NOTEBOOK_JOBS")
    if given:
        return check_jobs(given, where="RESEARCH_NOTEBOOK_JOBS")
    if (os.cpu_count() or 1) < 2:
        return 1
    if n_attempts:
        need, have = two_at_once_gb(n_attempts), available_gb()
        if need > 0.8 * have:
            if say is not None:
                say(f"{n_attempts:,} attempts: notebooks one at a time (two at once would need about {need:.0f} GB, "
                    f"{have:.0f} GB is available; --jobs 2 overrides)")
            return 1
    return 2


def check_jobs(value, *, where: str = "jobs") -> int:
    """``value`` as a number of notebooks at once (a whole number from 1), or a :class:`ConfigError`."""
    from research.errors import ConfigError

    try:
        jobs = int(value)
    except (TypeError, ValueError):
        jobs = 0
    if isinstance(value, bool) or jobs < 1 or str(jobs) != str(value).strip():
        raise ConfigError(f"{where}={value!r} must be a whole number of notebooks run at once, 1 or more")
    return jobs
