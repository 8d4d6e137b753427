"""The demo's redesigns and change logs, and loading a pair of cohorts for notebook 07.

:data:`DEMO_PAIRS` is the one list of what each demo follow-up fixed (and what it
revised without effect): :mod:`research.demo` simulates the cohorts from it and
:func:`demo_changelog` writes their change logs from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from research.demo import DEMO_PAIRS
from research.errors import ConfigError
from research.loop.profile import profile_cohort

__all__ = ["DEMO_PAIRS", "Pair", "changelog_for_followup", "demo_changelog", "ensure_demo_pair", "example_changelog_path",
           "load_pair", "resolve_changelog"]

_DESCRIPTIONS = {
    "too_easy": "Rewrote the item with plausible distractors so that it separates learners who know the topic",
    "miskeyed": "Corrected the answer key",
    "dif": "Reworded the item and its example so that it assumes no background knowledge",
    "no_learning_kc": "Revised the instruction and worked examples of the KC and added feedback to its practice items",
    "dropout_page": "Shortened the page and split its long video into three parts",
    "slow_page": "Cut the reading load of the page",
}


def changelog_for_followup(previous, followup, *, claimed=(), recommendations: pd.DataFrame | None = None,
                           date: str | None = None) -> dict:
    """The change log of a simulated follow-up (:func:`research.simulate.simulate_followup`).

    Every planted problem the follow-up truly fixed gets a change entry, and so does every
    label in ``claimed`` (a revision that was made but did not work: the problem persists
    in the follow-up). Items become ``item_revised``, the no-learning KC ``kc_revised``
    (KC model "Fine"), drop-out and slow pages ``page_revised``. With ``recommendations``
    (the previous cohort's findings) each change names the ids of the findings on its target.

    Returns the change-log mapping (write it with :func:`research.loop.changelog.write_changelog`).
    """
    from research.simulate.cohort import PLANTED_ALIASES, PLANTED

    fixed = list(followup.settings.get("fixed", []))
    claimed = [PLANTED_ALIASES.get(c, c) for c in ((claimed,) if isinstance(claimed, str) else claimed)]
    unknown = [c for c in claimed if c not in PLANTED]
    if unknown:
        raise ConfigError(f"unknown planted problem(s) {unknown} in claimed; valid: {list(PLANTED)}")
    labels = list(dict.fromkeys(fixed + claimed))
    t = previous.truth
    when = date or str(pd.Timestamp(followup.settings.get("start", "2027-01-01")).date() - pd.Timedelta(days=14))
    recs = recommendations if recommendations is not None else pd.DataFrame(columns=["recommendation_id", "target_id", "kc_model"])
    changes = []
    for label in labels:
        note = _DESCRIPTIONS[label]
        if label in ("too_easy", "miskeyed", "dif"):
            for item in t.items.loc[t.items["planted"] == label, "item_id"].astype(str):
                ids = sorted(recs.loc[recs["target_id"].astype(str) == item, "recommendation_id"].astype(str))
                changes.append({"date": when, "type": "item_revised", "item": item, "recommendations": ids,
                                "description": note})
        elif label == "no_learning_kc":
            for kc in t.kcs.loc[t.kcs["planted"] == label, "kc"].astype(str):
                sel = (recs["target_id"].astype(str) == kc) & (recs["kc_model"].astype(str) == "Fine")
                changes.append({"date": when, "type": "kc_revised", "kc_model": "Fine", "kc": kc,
                                "recommendations": sorted(recs.loc[sel, "recommendation_id"].astype(str)),
                                "description": note})
        else:
            for page in t.pages.loc[t.pages["planted"] == label, "page"].astype(str):
                ids = sorted(recs.loc[recs["target_id"].astype(str) == page, "recommendation_id"].astype(str))
                changes.append({"date": when, "type": "page_revised", "page": page, "recommendations": ids,
                                "description": note})
    for i, ch in enumerate(changes):
        ch["id"] = f"C{i + 1}"
        if not ch.get("recommendations"):
            ch.pop("recommendations", None)
    changes = [{"id": c.pop("id"), **c} for c in changes]
    return {
        "course": "simulated course",
        "from_version": previous.settings.get("course_version"),
        "to_version": followup.settings.get("course_version"),
        "changes": changes,
    }




def example_changelog_path() -> Path:
    from research.paths import project_root

    return project_root() / "examples" / "changelog.yaml"


def demo_changelog(cohort: str) -> dict:
    """The change log of a demo cohort's redesign, built from the simulation's truth.

    ``examples/changelog.yaml`` is this log for ``demo-2`` (a test keeps them equal).
    """
    from research.demo import DEMO_SETTINGS
    from research.simulate import simulate_cohort, simulate_followup

    if cohort not in DEMO_PAIRS:
        raise ConfigError(f"{cohort!r} is not a demo follow-up cohort; valid: {sorted(DEMO_PAIRS)}")
    sims = {"demo": simulate_cohort(cohort="demo", **DEMO_SETTINGS)}
    for i, name in enumerate(DEMO_PAIRS, start=1):
        prev, fixed, _ = DEMO_PAIRS[name]
        sims[name] = simulate_followup(sims[prev], fixed=fixed, seed=DEMO_SETTINGS["seed"] + i, cohort=name)
        if name == cohort:
            break
    predecessor, _, claimed = DEMO_PAIRS[cohort]
    prof = profile_cohort(sims[predecessor], dif=True)
    doc = changelog_for_followup(sims[predecessor], sims[cohort], claimed=claimed,
                                 recommendations=prof.recommendations)
    doc["course"] = "Demo course (simulated)"
    return doc


def resolve_changelog(changelog, *, cohort: str, predecessor: str):
    """The change log a comparison notebook should use.

    A path or dict is returned as it is. ``None`` means: for the demo follow-up cohorts
    the demo's log (``examples/changelog.yaml`` for demo-2, built from the simulation for
    demo-3); for any other cohort ``None`` (the comparison then reads revised items off
    the items tables' ``version`` column).
    """
    if changelog not in (None, ""):
        return changelog
    if cohort in DEMO_PAIRS and DEMO_PAIRS[cohort][0] == predecessor:
        if cohort == "demo-2" and example_changelog_path().exists():
            return str(example_changelog_path())
        return demo_changelog(cohort)
    return None


def ensure_demo_pair(warehouse=None, *, cohort: str = "demo-2") -> bool:
    """Make sure the demo cohorts up to ``cohort`` are in the warehouse; True when any was built."""
    from research.demo import build_demo_cohorts
    from research.paths import default_warehouse, resolve
    from research.store import open_warehouse

    order = ["demo", "demo-2", "demo-3"]
    if cohort not in order:
        return False
    path = resolve(warehouse) if warehouse else default_warehouse()
    needed = order[: order.index(cohort) + 1]
    if path.exists():
        with open_warehouse(path, read_only=True) as wh:
            if all(wh.has_cohort(c) for c in needed):
                return False
    build_demo_cohorts(path, n_cohorts=len(needed))
    return True


@dataclass
class Pair:
    """The two cohorts' data as loaded for a comparison notebook."""

    before: object
    after: object
    changelog: object = None
    extra: dict = field(default_factory=dict)


def load_pair(ctx, predecessor: str, changelog=None) -> Pair:
    """For a notebook: load the predecessor beside ``ctx``'s cohort (building the demo pair
    when needed) and resolve the change log."""
    from research.cohort import load

    ensure_demo_pair(ctx.warehouse, cohort=ctx.cohort)
    before = load(predecessor, ctx.warehouse)
    after = ctx.data
    return Pair(before=before, after=after, changelog=resolve_changelog(changelog, cohort=ctx.cohort, predecessor=predecessor))
