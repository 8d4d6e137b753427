"""The course change log: what was changed between two cohorts, when, and why.

A YAML file versioned with the course (see ``examples/changelog.yaml`` and its JSON Schema
``data_schema/changelog.schema.json``)::

    course: Digital skills for job seekers   # optional, free text
    from_version: v1                         # optional: course version before ...
    to_version: v2                           # ... and after the changes
    changes:
      - id: C1                               # optional; default C1, C2, ... in order
        date: 2026-12-15                     # required (ISO date)
        type: item_revised                   # see CHANGE_TYPES
        item: M1.P1.I2
        recommendations: [rec_0123456789abcdef]   # ids of the findings this answers
        description: harder distractors      # optional, free text

Change types and their keys (besides id, date, recommendations, description):

=================  =====================================================================
``item_revised``   ``item``: an item present in both cohorts
``item_added``     ``item``: an item of the after cohort only
``item_removed``   ``item``: an item of the before cohort only
``kc_revised``     ``kc_model``, ``kc``: instruction or practice of a KC was revised
``kc_split``       ``kc_model``, ``kc`` (before) and ``into`` (list of KCs after)
``kc_merged``      ``kc_model``, ``kcs`` (list of KCs before) and ``into`` (one KC after)
``page_revised``   ``page``: the page's text, media or layout was revised
``kc_model_revised``  ``kc_model`` (before) and ``into`` (the KC model the next cohort uses,
                   e.g. one imported with ``research kc-model import``); optional ``file``
                   (the KC-model file it came from)
=================  =====================================================================

:func:`read_changelog` checks the structure (unknown keys, missing keys, bad dates,
malformed recommendation ids) and, when the cohorts' items and KCs are given, that every
item, KC and page named exists where it must; every problem is reported at once in one
:class:`~research.errors.ConfigError` that names the bad values and lists valid ones.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from research.errors import ConfigError

__all__ = ["CHANGE_TYPES", "ChangeLog", "changelog_dict", "read_changelog", "write_changelog"]

CHANGE_TYPES = ("item_revised", "item_added", "item_removed", "kc_revised", "kc_split", "kc_merged", "page_revised",
                "kc_model_revised")
TOP_KEYS = ("course", "from_version", "to_version", "changes")
COMMON_KEYS = ("id", "date", "type", "recommendations", "description")
TYPE_KEYS = {
    "item_revised": ("item",),
    "item_added": ("item",),
    "item_removed": ("item",),
    "kc_revised": ("kc_model", "kc"),
    "kc_split": ("kc_model", "kc", "into"),
    "kc_merged": ("kc_model", "kcs", "into"),
    "page_revised": ("page",),
    "kc_model_revised": ("kc_model", "into"),
}
#: keys a change type may have besides its required ones
OPTIONAL_KEYS = {"kc_model_revised": ("file",)}
REC_ID = re.compile(r"^rec_[0-9a-f]{16}$")
#: Columns of :attr:`ChangeLog.changes`.
CHANGE_COLUMNS = ["change_id", "date", "type", "target_type", "target_id", "kc_model", "before", "after",
                  "recommendations", "description"]


@dataclass
class ChangeLog:
    """A validated change log.

    ``changes`` is tidy: one row per change with CHANGE_COLUMNS: change_id, date, type,
    target_type (item, kc, page), target_id (the item, page, or KC before; for a merge the
    KCs joined by ``+``), kc_model, before (list of KCs before for KC changes),
    after (list of KCs after), recommendations (list of ids), description.
    """

    changes: pd.DataFrame
    course: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    source: str | None = None
    raw: dict = field(default_factory=dict)

    def items(self, *types: str) -> list[str]:
        """Items named by changes of the given types (all item changes by default)."""
        types = types or ("item_revised", "item_added", "item_removed")
        c = self.changes
        return sorted(set(c.loc[c["type"].isin(types), "target_id"]))

    def pages(self) -> list[str]:
        c = self.changes
        return sorted(set(c.loc[c["type"] == "page_revised", "target_id"]))

    def kc_model_revision(self) -> tuple[str, str] | None:
        """``(KC model before, KC model after)`` of the last ``kc_model_revised`` change, else None.

        The after cohort's comparison and recommendations use the revised KC model.
        """
        c = self.changes[self.changes["type"] == "kc_model_revised"]
        if c.empty:
            return None
        last = c.sort_values("date", kind="stable").iloc[-1]
        return str(last["kc_model"]), str(last["after"][0])

    def kc_changes(self) -> pd.DataFrame:
        c = self.changes
        return c[c["target_type"] == "kc"].reset_index(drop=True)

    def addressed(self) -> pd.DataFrame:
        """One row per (recommendation_id, change_id) the log says a change answers."""
        c = self.changes[["change_id", "recommendations"]].explode("recommendations").dropna()
        return pd.DataFrame({"recommendation_id": c["recommendations"].astype(str).to_numpy(),
                             "change_id": c["change_id"].astype(str).to_numpy()})

    def __len__(self) -> int:
        return len(self.changes)


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _date(value, where: str, problems: list[str]):
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value))
    except (TypeError, ValueError):
        problems.append(f"{where}: date {value!r} is not an ISO date (YYYY-MM-DD)")
        return None


def _load(source) -> tuple[dict, str | None]:
    import yaml

    if isinstance(source, dict):
        return source, None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_absolute():
            from research.paths import resolve

            path = resolve(path)
        if not path.exists():
            raise ConfigError(f"change log {path} does not exist; give the path of the course's changelog YAML or None")
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"change log {path} is not valid YAML: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"change log {path} must be a mapping with a 'changes' list, got {type(doc).__name__}")
        return doc, str(path)
    raise ConfigError(f"changelog must be a path, a dict or None, got {type(source).__name__}")


def _kc_sets(frame: pd.DataFrame | None) -> dict[str, set[str]] | None:
    if frame is None:
        return None
    return {m: set(g["kc"].astype(str)) for m, g in frame.groupby(frame["kc_model"].astype(str))}


class _Checks:
    """The checks of each change against the cohorts' items, pages and KCs; every problem is collected."""

    def __init__(self, problems: list[str], *, items_before, items_after, kcs_before, kcs_after, pages_before, pages_after):
        self.problems = problems
        self.sets = {
            "items_before": None if items_before is None else {str(x) for x in items_before},
            "items_after": None if items_after is None else {str(x) for x in items_after},
            "pages_before": None if pages_before is None else {str(x) for x in pages_before},
            "pages_after": None if pages_after is None else {str(x) for x in pages_after},
        }
        self.kcb, self.kca = _kc_sets(kcs_before), _kc_sets(kcs_after)

    def check_in(self, values, known, what, where):
        """``known``: (label, set or None) pairs; one message per change for all sides."""
        if not isinstance(known, list):
            known = [("", known)]
        bad, sides, example = [], [], None
        for label, k in known:
            if k is None:
                continue
            missing = [str(v) for v in values if str(v) not in k]
            if missing:
                bad += [m for m in missing if m not in bad]
                sides.append(label)
                example = example or k
        if bad:
            side = f" (not in the {' nor the '.join(s for s in sides if s)} cohort)" if any(sides) else ""
            self.problems.append(f"{where}: unknown {what}{side} {bad}; valid are e.g. {sorted(example)[:8]} ({len(example)} in all)")

    def check_not_in(self, values, known, what, where):
        if known is None:
            return
        bad = [v for v in values if str(v) in known]
        if bad:
            self.problems.append(f"{where}: {what} {bad} already exist(s); use item_revised for an item in both cohorts")

    def change(self, i: int, ch, where: str, seen_ids: set[str]) -> dict | None:
        """One change as a row of :data:`CHANGE_COLUMNS`; None when it is too broken to read on."""
        problems = self.problems
        if not isinstance(ch, dict):
            problems.append(f"{where}: each change must be a mapping, got {ch!r}")
            return None
        ctype = ch.get("type")
        if ctype not in CHANGE_TYPES:
            problems.append(f"{where}: unknown change type {ctype!r}; valid types: {list(CHANGE_TYPES)}")
            return None
        allowed = COMMON_KEYS + TYPE_KEYS[ctype] + OPTIONAL_KEYS.get(ctype, ())
        extra = [k for k in ch if k not in allowed]
        if extra:
            problems.append(f"{where} ({ctype}): unknown key(s) {extra}; valid keys for {ctype}: {list(allowed)}")
        missing = [k for k in ("date",) + TYPE_KEYS[ctype] if ch.get(k) in (None, "", [])]
        if missing:
            problems.append(f"{where} ({ctype}): missing key(s) {missing}")
            return None
        cid = str(ch.get("id", f"C{i + 1}"))
        if cid in seen_ids:
            problems.append(f"{where}: change id {cid!r} is used twice; ids must be unique")
        seen_ids.add(cid)
        date = _date(ch["date"], where, problems)
        recs = [str(r) for r in _as_list(ch.get("recommendations"))]
        bad_recs = [r for r in recs if not REC_ID.match(r)]
        if bad_recs:
            problems.append(f"{where}: malformed recommendation id(s) {bad_recs}; ids look like 'rec_' + 16 hex digits")
        if ctype.startswith("item_"):
            target = self._item(ctype, ch, where)
        elif ctype == "kc_model_revised":
            target = self._kc_model(ch, where)
        elif ctype == "page_revised":
            target = self._page(ch, where)
        else:
            target = self._kc(ctype, ch, where)
        target_type, target_id, kc_model, before, after = target
        return {
            "change_id": cid,
            "date": pd.Timestamp(date) if date else pd.NaT,
            "type": ctype,
            "target_type": target_type,
            "target_id": target_id,
            "kc_model": kc_model,
            "before": before,
            "after": after,
            "recommendations": recs,
            "description": None if ch.get("description") is None else str(ch["description"]),
        }

    def _item(self, ctype: str, ch: dict, where: str) -> tuple:
        target = str(ch["item"])
        sides = []
        if ctype in ("item_revised", "item_removed"):
            sides.append(("before", self.sets["items_before"]))
        if ctype in ("item_revised", "item_added"):
            sides.append(("after", self.sets["items_after"]))
        self.check_in([target], sides, "item(s)", where)
        if ctype == "item_added":
            self.check_not_in([target], self.sets["items_before"], "item(s)", where)
        return "item", target, None, None, None

    def _kc_model(self, ch: dict, where: str) -> tuple:
        target = str(ch["kc_model"])
        before, after = [target], [str(ch["into"])]
        for kcs, label, name in ((self.kcb, "before", target), (self.kca, "after", after[0])):
            if kcs is not None and name not in kcs:
                self.problems.append(f"{where}: unknown KC model {name!r} in the {label} cohort; valid: {sorted(kcs)}"
                                     + (" (import it with `research kc-model import`)" if label == "after" else ""))
        return "kc_model", target, target, before, after

    def _page(self, ch: dict, where: str) -> tuple:
        target = str(ch["page"])
        self.check_in([target], [("before", self.sets["pages_before"]), ("after", self.sets["pages_after"])], "page(s)", where)
        return "page", target, None, None, None

    def _kc(self, ctype: str, ch: dict, where: str) -> tuple:
        kc_model = str(ch["kc_model"])
        if ctype == "kc_merged":
            before = [str(k) for k in _as_list(ch["kcs"])]
            after = [str(ch["into"])] if not isinstance(ch["into"], list) else [str(k) for k in ch["into"]]
            if len(before) < 2 or len(after) != 1:
                self.problems.append(f"{where} (kc_merged): 'kcs' needs at least 2 KCs and 'into' exactly one; got {before} into {after}")
            target = "+".join(before)
        else:
            before = [str(ch["kc"])]
            if ctype == "kc_split":
                after = [str(k) for k in _as_list(ch["into"])]
                if len(after) < 2:
                    self.problems.append(f"{where} (kc_split): 'into' needs at least 2 KCs, got {after}")
            else:
                after = list(before)
            target = before[0]
        for kcs, label, names in ((self.kcb, "before", before), (self.kca, "after", after)):
            if kcs is None:
                continue
            if kc_model not in kcs:
                self.problems.append(f"{where}: unknown kc_model {kc_model!r} in the {label} cohort; valid: {sorted(kcs)}")
            else:
                self.check_in(names, [(label, kcs[kc_model])], f"KC(s) of model {kc_model!r}", where)
        return "kc", target, kc_model, before, after


def read_changelog(
    source,
    *,
    items_before=None,
    items_after=None,
    kcs_before: pd.DataFrame | None = None,
    kcs_after: pd.DataFrame | None = None,
    pages_before=None,
    pages_after=None,
) -> ChangeLog:
    """Read and validate a change log (a YAML path or an already parsed dict).

    Parameters
    ----------
    items_before, items_after
        Item ids of the before and after cohort; when given, every item named must exist
        where its change type says.
    kcs_before, kcs_after
        Frames with ``kc_model`` and ``kc`` columns (the KCs of each cohort); when given,
        KC models and KCs are checked.
    pages_before, pages_after
        Page ids of each cohort.

    Raises
    ------
    ConfigError
        Listing every problem: unknown or missing keys, unknown change types, bad dates,
        malformed recommendation ids, unknown items, KCs, KC models or pages.
    """
    doc, path = _load(source)
    where0 = path or "change log"
    problems: list[str] = []
    unknown = [k for k in doc if k not in TOP_KEYS]
    if unknown:
        problems.append(f"unknown top-level key(s) {unknown}; valid keys: {list(TOP_KEYS)}")
    changes = doc.get("changes")
    if changes is None:
        changes = []
        problems.append("missing key 'changes' (a list of changes; it may be empty: changes: [])")
    elif not isinstance(changes, list):
        problems.append(f"'changes' must be a list, got {type(changes).__name__}")
        changes = []
    checks = _Checks(problems, items_before=items_before, items_after=items_after, kcs_before=kcs_before,
                     kcs_after=kcs_after, pages_before=pages_before, pages_after=pages_after)
    rows = []
    seen_ids: set[str] = set()
    for i, ch in enumerate(changes):
        row = checks.change(i, ch, f"{where0}, changes[{i}]", seen_ids)
        if row is not None:
            rows.append(row)
    if problems:
        name = f"change log {path}" if path else "the change log"
        raise ConfigError(f"{name} has {len(problems)} problem(s):\n- " + "\n- ".join(problems))
    frame = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
    for col in ("change_id", "type", "target_type", "target_id", "kc_model", "description"):
        frame[col] = frame[col].astype("string")
    return ChangeLog(
        changes=frame,
        course=None if doc.get("course") is None else str(doc["course"]),
        from_version=None if doc.get("from_version") is None else str(doc["from_version"]),
        to_version=None if doc.get("to_version") is None else str(doc["to_version"]),
        source=path,
        raw=doc,
    )


def changelog_dict(changes: list[dict[str, Any]], **top) -> dict:
    """A change-log mapping from change entries (for writing with :func:`write_changelog`)."""
    return {**{k: v for k, v in top.items() if v is not None}, "changes": changes}


def write_changelog(doc: dict, path: str | os.PathLike[str]) -> Path:
    """Write a change-log mapping as YAML (after checking its structure)."""
    import yaml

    read_changelog(doc)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    def _plain(obj):
        if isinstance(obj, dict):
            return {k: _plain(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [_plain(v) for v in obj]
        if isinstance(obj, (_dt.date, _dt.datetime)):
            return obj.isoformat()[:10]
        return obj

    path.write_text(yaml.safe_dump(_plain(doc), sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path
