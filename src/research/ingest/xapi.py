"""xAPI statements exported from a Learning Record Store -> attempts, attempt_kcs, assessments.

Accepted files: a JSON array of statements, JSON lines (one statement per line), or an
LRS response ``{"statements": [...]}``; any of them gzip-compressed (``.gz``).

What a statement means is said by a *statement profile* (:mod:`research.ingest.xapi_profile`):
which verbs are answers, hints, answer reveals or AU results, and where the item, step,
page, attempt, response and KCs are. Built-in profiles: ``torus`` (OLI Torus), ``openedx``
(Open edX event-routing-backends), ``cmi5`` (AU results into ``assessments``) and ``adl``
(plain xAPI, the behaviour before profiles). Option ``profile`` names one (or a YAML file);
without it the profile is sniffed from the statements (``adl`` when no other fits).

Common to every profile
-----------------------
actor
    ``learner_id``: ``actor.account.name``, else ``actor.mbox``, ``actor.mbox_sha1sum``,
    ``actor.openid``, pseudonymised before anything else. No actor, authority or other
    agent block is ever kept, not even in the quarantine (a reject keeps the statement id,
    verb, object id, timestamp and the pseudonym only).
voided (``http://adlnet.gov/expapi/verbs/voided`` on a StatementRef)
    the voiding statement is never an attempt; the statement it points to is removed, in
    this file and in the warehouse (also when the target arrives in a later file or pull),
    and kept in the audit table ``voided`` (:mod:`research.ingest.voiding`).
timestamp, result.duration
    UTC, timezone-naive; ``duration_s`` from the ISO 8601 duration (``PT1M30.5S``).
id
    ``attempt_id`` = the statement id (``xs_`` + md5 of the statement without its actor,
    plus the pseudonym, when it has none). Hints a Torus answer carries (``hints_requested``)
    become hint rows before the answer with ids ``<answer id>#hint<n>``.
attempt
    from the profile's ``attempt`` field when there is one, else counted per learner and
    step in time order (hints count, as in DataShop).

Rejects and skips: bad JSON lines (also nesting too deep, a lone UTF-16 surrogate) and
statements without actor, verb, item or timestamp are rejected with the JSON path as column.
A statement that no rule takes, or that a rule ignores, is a reject of kind ``skipped`` whose
reason names its verb and the rule. ``source_line`` is the line for JSON lines, and the
1-based statement number for a JSON array. ``n_read`` is the number of statements (JSON
lines: non-blank lines) and equals the statements loaded + rejected + skipped
(``IngestResult.counts``); hint rows derived from an answer are extra attempts rows of
the same statement.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from research.errors import ConfigError, DataError
from research.ingest import _common as C
from research.ingest import xapi_profile as XP
from research.ingest.base import IngestResult
from research.ingest.datashop_tx import check_options

__all__ = ["NAME", "OPTIONS", "from_statements", "read", "sniff"]

NAME = "xapi"
KC_PREFIX = "https://w3id.org/xapi/course-research/kc/"
VOIDED = "http://adlnet.gov/expapi/verbs/voided"
OPTIONS = {"kc_extensions", "kc_extension", "keep_full_iri", "course_version", "encoding", "profile"}
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def sniff(path: Path, head: str) -> bool:
    if path.suffix.lower() == ".gz":
        head = _gz_head(path)
    text = head.lstrip("\ufeff \t\r\n")
    return text[:1] in ("[", "{") and (('"actor"' in head and '"verb"' in head) or '"statements"' in head)


def _gz_head(path: Path) -> str:
    import gzip

    try:
        with gzip.open(path, "rb") as fh:
            return fh.read(65536).decode("utf-8", errors="replace")
    except (OSError, EOFError):
        return ""


def _bad_unicode(obj) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


SURROGATE_REASON = "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode"


def _parse(path: Path, encoding: str) -> tuple[list, list[int], list[dict], str]:
    """(statements, their locations, bad lines, kind) where kind is 'lines' or 'array'."""
    text = path.read_text(encoding=encoding) if encoding.lower() not in ("utf-8", "utf8") and path.suffix.lower() != ".gz" else None
    if text is None:
        data = path.read_bytes()
        if path.suffix.lower() == ".gz":
            import gzip

            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                raise DataError(f"{path.name}: not a readable gzip file ({exc})") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise C.utf8_error(path, data.count(b"\n", 0, exc.start) + 1, exc.start, data[exc.start]) from None
    return parse_text(text, path.name)


_NO_STATEMENT = object()  # a blank or bad JSON line


def _line_statement(number: int, line: str, bad: list[dict]):
    """The statement on one JSON line; a bad line goes to ``bad`` and gives ``_NO_STATEMENT`` (so does a blank one)."""
    if not line.strip():
        return _NO_STATEMENT
    try:
        st = json.loads(line)
    except json.JSONDecodeError as exc:
        bad.append({"line": number, "reason": f"bad JSON: {exc.msg} at column {exc.colno}"})
        return _NO_STATEMENT
    except RecursionError:
        bad.append({"line": number, "reason": "bad JSON: nested too deeply to be an xAPI statement"})
        return _NO_STATEMENT
    if "\\u" in line and _SURROGATE.search(line) and _bad_unicode(st):
        bad.append({"line": number, "reason": SURROGATE_REASON})
        return _NO_STATEMENT
    return st


def parse_text(text: str, name: str) -> tuple[list, list[int], list[dict], str]:
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{name}: the file is empty (no statements)")
    stripped = text.lstrip()
    doc = None
    if stripped.startswith("["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise DataError(f"{name}: the JSON is nested too deeply to be xAPI statements") from None
    elif "\n" not in stripped.rstrip():
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            doc = None  # one line: read as JSON lines, so the line becomes a reject
    elif stripped.startswith("{"):
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            doc = None
    if doc is not None:
        if isinstance(doc, dict) and isinstance(doc.get("statements"), list):
            doc = doc["statements"]
        elif isinstance(doc, dict):
            doc = [doc]
        if not isinstance(doc, list):
            raise DataError(f"{name}: expected a JSON array of xAPI statements, a {{\"statements\": [...]}} object or JSON lines")
        where = list(range(1, len(doc) + 1))
        bad = []
        if _SURROGATE.search(text):
            keep = [i for i, s in enumerate(doc) if not _bad_unicode(s)]
            bad = [{"line": i + 1, "reason": SURROGATE_REASON} for i in range(len(doc)) if i not in set(keep)]
            doc, where = [doc[i] for i in keep], [where[i] for i in keep]
        return doc, where, bad, "array"
    # JSON lines: parse line by line so one bad line is one reject
    statements, where, bad = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):  # parsing is per line by nature
        st = _line_statement(number, line, bad)
        if st is not _NO_STATEMENT:
            statements.append(st)
            where.append(number)
    return statements, where, bad, "lines"


_DURATION = r"^P(?:(?P<W>\d+(?:\.\d+)?)W)?(?:(?P<D>\d+(?:\.\d+)?)D)?(?:T(?:(?P<H>\d+(?:\.\d+)?)H)?(?:(?P<M>\d+(?:\.\d+)?)M)?(?:(?P<S>\d+(?:\.\d+)?)S)?)?$"


def iso_duration_seconds(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ISO 8601 durations (``PT1M30.5S``) -> seconds; (values, bad)."""
    text = C.blank_to_na(s)
    parts = text.str.extract(_DURATION)
    secs = (
        parts["W"].astype("float64").fillna(0) * 604800 + parts["D"].astype("float64").fillna(0) * 86400
        + parts["H"].astype("float64").fillna(0) * 3600 + parts["M"].astype("float64").fillna(0) * 60
        + parts["S"].astype("float64").fillna(0)
    )
    matched = parts.notna().any(axis=1) | (text == "P") | (text == "PT")
    bad = text.notna() & ~matched
    return secs.where(text.notna() & matched), bad.fillna(False).astype(bool)


def _str(v):
    return None if v is None else XP._text(v)


def _number(v):
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return None


def _profile_for(statements, options) -> tuple[XP.Profile, str]:
    if options.get("profile") is not None:
        return XP.load_profile(options["profile"]), "named"
    return XP.sniff_profile(statements)


def _kc_specs(profile: XP.Profile, options: dict) -> tuple[dict, str | None]:
    ctx = "context.extensions[{}]"
    if "kc_extensions" in options:
        spec = options["kc_extensions"]
        if not isinstance(spec, dict):
            raise ConfigError(f"kc_extensions must map a KC model name to an extension IRI, got {spec!r}")
        return {str(m): XP.FieldSpec.parse(ctx.format(iri), "kc_extensions") for m, iri in spec.items()}, None
    if "kc_extension" in options:
        iri = str(options["kc_extension"])
        return {iri.rstrip("/").rsplit("/", 1)[-1]: XP.FieldSpec.parse(ctx.format(iri), "kc_extension")}, None
    return dict(profile.kcs), profile.kc_prefix


def read(path, *, cohort: str, pseudonymiser, options: dict | None = None) -> IngestResult:
    path = Path(path)
    options = check_options(options, OPTIONS, NAME)
    encoding = options.get("encoding", "utf-8")
    if encoding.lower() in ("utf-8", "utf8") and _is_json_lines(path):
        bad: list[dict] = []
        return from_statements(_stream_lines(path, bad), None, bad, "lines", source=str(path), cohort=cohort,
                               pseudonymiser=pseudonymiser, options=options)
    statements, where, bad_lines, kind = _parse(path, encoding)
    return from_statements(statements, where, bad_lines, kind, source=str(path), cohort=cohort,
                           pseudonymiser=pseudonymiser, options=options)


def _open(path: Path):
    import gzip

    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _is_json_lines(path: Path) -> bool:
    """True when the first non-blank line is a whole statement (so the file streams line by line)."""
    try:
        with _open(path) as fh:
            for raw in fh:
                line = raw.decode("utf-8", errors="replace").strip().removeprefix("\ufeff")
                if not line:
                    continue
                if not line.startswith("{"):
                    return False
                try:
                    first = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    return False  # a pretty-printed document (or a bad first line): read whole, as before
                return isinstance(first, dict) and not ("statements" in first and "actor" not in first)
    except (OSError, EOFError):
        return False
    return False


def _stream_lines(path: Path, bad: list):
    """(line number, statement) for each JSON line; bad lines go to ``bad``. Nothing is kept."""
    offset = 0
    with _open(path) as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise C.utf8_error(path, number, offset + exc.start, raw[exc.start]) from None
            offset += len(raw)
            if number == 1:
                line = line.removeprefix("\ufeff")
            st = _line_statement(number, line, bad)
            if st is not _NO_STATEMENT:
                yield number, st


_CANDIDATE_KEYS = ("i", "sid", "item", "step", "page", "module", "attempt", "outcome", "response", "ts", "dur", "session", "hints", "kcs", "rule")


@dataclass
class _Fields:
    """Where the profile (and the options) find an attempt's parts in a statement."""

    item: XP.FieldSpec | None
    item_col: str
    step: XP.FieldSpec | None
    page: XP.FieldSpec | None
    module: XP.FieldSpec | None
    attempt: XP.FieldSpec | None
    session: XP.FieldSpec | None
    response: XP.FieldSpec | None
    kcs: dict
    kc_prefix: str | None


def _fields(profile: XP.Profile, options: dict) -> _Fields:
    fields = profile.fields
    item_spec = fields.get("item")
    if options.get("keep_full_iri") and item_spec is not None and item_spec.last_segment:
        item_spec = XP.FieldSpec(paths=item_spec.paths)
    page_spec, module_spec = fields.get("page"), fields.get("module")
    if not page_spec and profile.name == "adl":
        page_spec = XP.FieldSpec(paths=[("context", "contextActivities", "parent", "id")], last_segment=True)
        module_spec = XP.FieldSpec(paths=[("context", "contextActivities", "grouping", "id")], last_segment=True)
    kc_specs, kc_prefix = _kc_specs(profile, options)
    return _Fields(item=item_spec, item_col=item_spec.describe() if item_spec is not None else "object.id",
                   step=fields.get("step"), page=page_spec, module=module_spec, attempt=fields.get("attempt"),
                   session=fields.get("session"), response=fields.get("response"), kcs=kc_specs, kc_prefix=kc_prefix)


def _actor(st: dict) -> str | None:
    """The raw learner id: ``actor.account.name``, else ``mbox``, ``mbox_sha1sum``, ``openid``."""
    actor = st.get("actor")
    if not isinstance(actor, dict):
        return None
    acc = actor.get("account")
    a = acc.get("name") if isinstance(acc, dict) else None
    for k in ("mbox", "mbox_sha1sum", "openid"):
        if a is None or a == "":
            a = actor.get(k)
    return _str(a) if a not in (None, "") else None


def _statement_kcs(st: dict, f: _Fields) -> dict[str, str]:
    """KC model -> KCs (joined with ``~~``) of one statement, from the profile's fields and the KC extensions."""
    kcs = {}
    for model, spec in f.kcs.items():
        v = spec.value(st)
        if v is not None:
            kcs[model] = "~~".join(_str(x) for x in v if x is not None) if isinstance(v, list) else _str(v)
    if f.kc_prefix:
        ext = XP.get(st, ("context", "extensions"))
        if isinstance(ext, dict):
            for k, v in ext.items():
                if isinstance(k, str) and k.startswith(f.kc_prefix) and v is not None:
                    kcs[k[len(f.kc_prefix):].strip("/").rsplit("/", 1)[-1]] = "~~".join(map(_str, v)) if isinstance(v, list) else _str(v)
    return kcs


def _answer_correct(rule, profile: XP.Profile, result: dict, score: dict, loc: str) -> tuple[bool | None, tuple[str, str, str] | None]:
    """Whether an answer is marked correct by the profile's rule, or why it cannot be told: (ok, (column, reason, kind))."""
    correct = rule.correct or profile.correct
    if correct.rule == "success":
        ok = result.get("success")
        if isinstance(ok, str):
            ok = {"true": True, "false": False}.get(ok.lower())
        if not isinstance(ok, bool):
            return None, ("verb.id", f"{loc}: answer without result.success: not a graded attempt", "skipped")
        return ok, None
    if correct.rule == "raw_equals_max":
        raw, mx = _number(score.get("raw")), _number(score.get("max"))
        if raw is None:
            return None, ("result.score.raw", f"{loc}: an answer under profile '{profile.name}' needs result.score.raw", "rejected")
        if mx is None:
            return None, ("result.score.max", f"{loc}: score without max: result.score.raw {score.get('raw')!r} but no result.score.max", "rejected")
        return raw == mx, None
    sc = _number(score.get("scaled"))
    if sc is None and _number(score.get("raw")) is not None and _number(score.get("max")):
        sc = _number(score.get("raw")) / _number(score.get("max"))
    if sc is None:
        return None, ("result.score.scaled", f"{loc}: an answer needs result.score.scaled (or raw and max)", "rejected")
    return sc >= correct.threshold, None


def _au_score(rule, result: dict, score: dict, loc: str) -> tuple[tuple[float, float] | None, tuple[str, str, str] | None]:
    """An AU result's (score, max): raw and max, else scaled out of 1, else passed/failed as 1 or 0."""
    raw, mx, scaled = _number(score.get("raw")), _number(score.get("max")), _number(score.get("scaled"))
    if raw is not None and mx is None:
        return None, ("result.score.max", f"{loc}: score without max: result.score.raw {score.get('raw')!r} but no result.score.max", "rejected")
    if raw is None and scaled is not None:
        raw, mx = scaled, 1.0
    if raw is None:
        passed = rule.passed if rule.passed is not None else result.get("success")
        if not isinstance(passed, bool):
            return None, ("result.score", f"{loc}: an AU result needs result.score or a passed/failed verb", "rejected")
        raw, mx = (1.0 if passed else 0.0), 1.0
    return (raw, mx), None


class _Pass:
    """The one pass over the statements: each is classified (voiding, reject, skip, AU result or
    attempt candidate) and what it gives is collected; nothing else of it is kept."""

    def __init__(self, profile: XP.Profile, fields: _Fields, name: str, loc_word: str):
        self.profile, self.f, self.name, self.loc_word = profile, fields, name, loc_word
        self.actor_raw: list = []
        self.where: list[int] = []
        self.bodies: dict[int, str] = {}  # content of statements without an id (for a stable hashed id)
        self.rule_counts: Counter = Counter()
        self.unmatched: Counter = Counter()
        self.rej: list[tuple[int, str, str, str]] = []  # (index, column, reason, kind)
        self.cand: dict[str, list] = {k: [] for k in _CANDIDATE_KEYS}
        self.assess: dict[str, list] = {k: [] for k in ("i", "instrument", "score", "max", "ts", "rule", "sid")}
        self.voids: list[tuple[str, str, int]] = []  # target, voiding id, index
        self.info: list[dict] = []
        self.answer_verbs = ", ".join(profile.verbs_by_kind("answer")) or "none"
        self.hint_verbs = ", ".join(profile.verbs_by_kind("hint")) or "none"

    def reject(self, i: int, why: tuple[str, str, str]) -> None:
        self.rej.append((i, *why))

    def add(self, i: int, loc_no: int, st) -> None:
        self.where.append(loc_no)
        self.actor_raw.append(None)
        self.info.append({})
        loc = f"{self.loc_word} {loc_no}"
        if not isinstance(st, dict):
            self.reject(i, ("$", f"{loc}: not a JSON object", "rejected"))
            return
        self.actor_raw[i] = _actor(st)
        verb = st.get("verb")
        verb_id = verb.get("id") if isinstance(verb, dict) else None
        verb_id = verb_id if isinstance(verb_id, str) and verb_id else None
        obj = st.get("object")
        object_id = obj.get("id") if isinstance(obj, dict) else None
        object_id = _str(object_id) if object_id is not None else None
        sid = st.get("id") if isinstance(st.get("id"), str) and st.get("id") else None
        self.info[i] = {"id": sid, "verb.id": verb_id, "object.id": object_id, "timestamp": _str(st.get("timestamp"))}
        if verb_id == VOIDED:
            self._voiding(i, loc, obj, object_id, sid)
            return
        if self.actor_raw[i] is None:
            self.reject(i, ("actor", f"{loc}: missing actor (account.name, mbox, mbox_sha1sum or openid)", "rejected"))
            return
        if verb_id is None:
            self.reject(i, ("verb.id", f"{loc}: missing verb", "rejected"))
            return
        rule = self._rule(i, st, verb_id, obj, object_id)
        if rule is None:
            return
        result = st.get("result") if isinstance(st.get("result"), dict) else {}
        score = result.get("score") if isinstance(result.get("score"), dict) else {}
        if rule.kind == "assessment":
            self._au_result(i, loc, st, rule, object_id, result, score, sid)
        else:
            self._attempt(i, loc, st, rule, object_id, result, score, sid)

    def _voiding(self, i: int, loc: str, obj, object_id: str | None, sid: str | None) -> None:
        target = object_id if isinstance(obj, dict) and obj.get("objectType") == "StatementRef" else None
        self.rule_counts["voided"] += 1
        if target is None:
            self.reject(i, ("object.id", f"{loc}: a voided statement must point at a StatementRef (object.objectType StatementRef, object.id)", "rejected"))
        else:
            self.voids.append((target, sid or f"{self.name}:{self.where[i]}", i))

    def _rule(self, i: int, st: dict, verb_id: str, obj, object_id: str | None):
        """The profile's rule that takes the statement (None, with a skip, when none does or it ignores it)."""
        profile = self.profile
        verb_name = re.sub(r"^.*[/#:]", "", verb_id.rstrip("/")).lower()
        definition = obj.get("definition") if isinstance(obj, dict) else None
        object_type = definition.get("type") if isinstance(definition, dict) else None
        cats = XP.categories_of(st)
        rule = next((r for r in profile.rules if r.matches(verb_id, verb_name, object_type, object_id, cats, st)), None)
        on_type = f" on {object_type}" if object_type else ""
        if rule is None:
            self.unmatched[verb_id] += 1
            self.reject(i, ("verb.id", f"verb '{verb_name}' is not an attempt in profile '{profile.name}': no rule takes {verb_id}"
                            + on_type + f" (answer verbs: {self.answer_verbs}; hint verbs: {self.hint_verbs})", "skipped"))
            return None
        if rule.kind == "ignore":
            self.rule_counts[rule.name] += 1
            self.reject(i, ("verb.id", f"verb '{verb_name}' is not an attempt: rule '{rule.name}' of profile '{profile.name}' ignores it"
                            + (f" ({rule.reason})" if rule.reason else ""), "skipped"))
            return None
        self._verb_name = verb_name  # for a reveal's skip, said once the item is known
        return rule

    def _au_result(self, i: int, loc: str, st: dict, rule, object_id: str | None, result: dict, score: dict, sid: str | None) -> None:
        instrument = self.profile.instrument.value(st) if self.profile.instrument else object_id
        scored, why = _au_score(rule, result, score, loc)
        if why is not None:
            self.reject(i, why)
            return
        if instrument is None:
            self.reject(i, ("object.id", f"{loc}: missing object id (the AU)", "rejected"))
            return
        self.rule_counts[rule.name] += 1
        for k, v in (("i", i), ("instrument", _str(instrument)), ("score", scored[0]), ("max", scored[1]), ("ts", _str(st.get("timestamp"))), ("rule", rule.name), ("sid", sid)):
            self.assess[k].append(v)

    def _attempt(self, i: int, loc: str, st: dict, rule, object_id: str | None, result: dict, score: dict, sid: str | None) -> None:
        """An answer, hint or answer reveal: a candidate attempt (checked later, all at once), or a reject."""
        f, profile = self.f, self.profile
        item = f.item.value(st) if f.item is not None else object_id
        if item is None:
            reason = "missing object id" if f.item_col == "object.id" else f"missing item ({f.item_col})"
            self.reject(i, (f.item_col, f"{loc}: {reason}", "rejected"))
            return
        item = _str(item)
        if rule.kind == "reveal":
            self.rule_counts[rule.name] += 1
            self.reject(i, ("verb.id", f"answer reveal on item '{item}' (verb '{self._verb_name}', rule '{rule.name}' of profile '{profile.name}'): "
                            "the learner was shown the answer; not an attempt", "skipped"))
            return
        outcome = "hint"
        if rule.kind == "answer":
            ok, why = _answer_correct(rule, profile, result, score, loc)
            if why is not None:
                if why[2] == "skipped":
                    self.rule_counts[rule.name + " (no result.success)"] += 1
                self.reject(i, why)
                return
            outcome = "correct" if ok else "incorrect"
        self.rule_counts[rule.name] += 1
        hints = rule.hints.value(st) if rule.hints is not None else None
        step = f.step.value(st) if f.step is not None else None
        vals = {
            "i": i, "sid": sid, "item": item, "step": _str(step) if step is not None else item,
            "page": _str(f.page.value(st)) if f.page else None, "module": _str(f.module.value(st)) if f.module else None,
            "attempt": _str(f.attempt.value(st)) if f.attempt else None, "outcome": outcome,
            "response": _str(f.response.value(st)) if f.response else None,
            "ts": _str(st.get("timestamp")), "dur": _str(result.get("duration")),
            "session": _str(f.session.value(st)) if f.session else None,
            "hints": [h for h in hints if h is not None] if isinstance(hints, list) else [],
            "kcs": _statement_kcs(st, f), "rule": rule.name,
        }
        for k, v in vals.items():
            self.cand[k].append(v)
        if sid is None:
            self.bodies[i] = json.dumps({k: v for k, v in st.items() if k not in ("actor", "authority")}, sort_keys=True, default=str)


def _checked_candidates(p: _Pass) -> tuple[pd.DataFrame, pd.Series, pd.Series, np.ndarray]:
    """The candidate attempts as a frame with their timestamps and durations, checked all at once
    (timestamp, duration, attempt number: the first failing check rejects); returns (frame, ts, duration, good)."""
    cand = p.cand
    c = pd.DataFrame({k: v for k, v in cand.items() if k not in ("hints", "kcs")})
    if c.empty:
        c = pd.DataFrame({k: pd.Series(dtype=object) for k in cand if k not in ("hints", "kcs")})
    c["i"] = c["i"].astype("int64")
    c["line"] = np.asarray(p.where, dtype="int64")[c["i"].to_numpy()] if len(c) else np.array([], dtype="int64")
    ts_text = C.blank_to_na(c["ts"].astype("string"))
    ts = C.parse_timestamps(ts_text)
    duration, bad_duration = iso_duration_seconds(c["dur"].astype("string"))
    attempt, bad_attempt = C.parse_integers(c["attempt"].astype("string"), missing=())
    attempt_spec = p.f.attempt
    attempt_col = attempt_spec.describe() if attempt_spec and not attempt_spec.extension_suffix else "context.extensions.attempt"
    checks = [
        (ts_text.isna(), "timestamp", "missing timestamp"),
        (ts.isna(), "timestamp", lambda m: "cannot parse timestamp " + C.quoted(ts_text[m]) + "; expected ISO 8601, e.g. 2024-03-01T10:00:00Z"),
        (bad_duration, "result.duration", lambda m: "result.duration " + C.quoted(c["dur"].astype("string")[m]) + " is not an ISO 8601 duration such as PT1M30S"),
        (bad_attempt | (attempt < 1).fillna(False), attempt_col, lambda m: "attempt " + C.quoted(c["attempt"].astype("string")[m]) + " is not a whole number >= 1"),
    ]
    bad, bcol, breason = C.first_reason(checks, c.index)
    for idx in np.flatnonzero(bad.to_numpy()):
        i = int(c["i"].iat[idx])
        p.rej.append((i, str(bcol.iat[idx]), f"{p.loc_word} {p.where[i]}: {breason.iat[idx]}", "rejected"))
    return c, ts, duration, ~bad.to_numpy()


def _statement_ids(p: _Pass, c: pd.DataFrame, good: np.ndarray, learner_all: pd.Series) -> None:
    """``attempt_id`` of each candidate (the statement id, else a hash of its content and learner); a
    repeated id is a reject (the first is kept). ``good`` and ``c`` change in place."""
    loc_word = p.loc_word
    sid = c["sid"].astype(object).where(c["sid"].notna(), None).to_numpy().copy()
    need = [k for k in np.flatnonzero(good) if sid[k] is None]
    if need:
        body = [p.bodies[int(c["i"].iat[j])] for j in need]
        canon = pd.DataFrame({"s": body, "learner": learner_all.iloc[c["i"].to_numpy()[need]].to_numpy()})
        sid[need] = C.content_ids(canon, ["learner", "s"], "xs_").to_numpy()
    seen: dict[str, int] = {}
    for k in np.flatnonzero(good):
        key = sid[k]
        if key in seen:
            j = seen[key]
            same = all(c[col].iat[k] == c[col].iat[j] for col in ("item", "outcome", "ts", "response")) and learner_all.iat[int(c["i"].iat[k])] == learner_all.iat[int(c["i"].iat[j])]
            i = int(c["i"].iat[k])
            p.rej.append((i, "id", f"{loc_word} {p.where[i]}: duplicate of {loc_word} {int(c['line'].iat[j])}" + ("" if same else " with different content") + f" (statement id {key})", "rejected"))
            good[k] = False
        else:
            seen[key] = k
    c["attempt_id"] = sid


def _attempts_frame(c: pd.DataFrame, keep: np.ndarray, hints_list: list, ts: pd.Series, duration: pd.Series,
                    learner_all: pd.Series, pseudonymiser, *, cohort: str, name: str, options: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """The attempts rows (Torus hints expanded before their answer; missing attempt numbers counted
    per learner and step in time order), and the rows each kept candidate became."""
    rows = c[keep]
    reps = np.array([len(h) + 1 for h in hints_list], dtype="int64")
    att = rows.loc[rows.index.repeat(reps)].copy() if len(rows) else rows.copy()
    sub = np.concatenate([np.arange(r) for r in reps]) if len(reps) else np.array([], dtype="int64")
    is_hint_row = sub < np.repeat(reps - 1, reps) if len(reps) else np.array([], dtype=bool)
    att["sub"] = sub
    att["attempt_id"] = np.where(is_hint_row, att["attempt_id"].astype(str) + "#hint" + (sub + 1).astype(str), att["attempt_id"].astype(str))
    att["outcome"] = np.where(is_hint_row, "hint", att["outcome"].astype(object))
    att["response"] = att["response"].where(~is_hint_row, None)
    att["attempt"] = np.where(is_hint_row, None, att["attempt"].astype(object))
    att["dur"] = att["dur"].where(~is_hint_row, None)
    learner = learner_all.iloc[att["i"].to_numpy()].to_numpy() if len(att) else np.array([], dtype=object)
    ts_rows = ts[keep].repeat(reps) if len(rows) else ts[keep]
    dur_rows = duration[keep].repeat(reps) if len(rows) else duration[keep]
    out = pd.DataFrame({
        "cohort": cohort,
        "attempt_id": att["attempt_id"].to_numpy(),
        "learner_id": learner,
        "course_version": options.get("course_version"),
        "session_id": pseudonymiser.sessions(pd.Series(att["session"].to_numpy(), dtype="string")).to_numpy(),
        "module": att["module"].to_numpy(),
        "page": att["page"].to_numpy(),
        "item_id": att["item"].to_numpy(),
        "step_id": att["step"].to_numpy(),
        "attempt": pd.array(pd.to_numeric(pd.Series(att["attempt"].to_numpy(), dtype=object), errors="coerce"), dtype="Int64"),
        "outcome": att["outcome"].to_numpy(),
        "response": att["response"].to_numpy(),
        "timestamp": ts_rows.to_numpy(),
        "duration_s": np.where(is_hint_row, np.nan, dur_rows.to_numpy(dtype="float64", na_value=np.nan)) if len(att) else np.array([], dtype="float64"),
        "source_file": name,
        "source_line": att["line"].to_numpy(),
        "_sub": sub,
    })
    for col in ("session_id", "module", "page", "item_id", "step_id", "response", "learner_id", "outcome", "attempt_id"):
        out[col] = C.blank_to_na(pd.Series(out[col].to_numpy(), dtype=object).astype("string")).to_numpy() if len(out) else out[col]
    missing = out["attempt"].isna()
    if missing.any():
        order = out.sort_values(["timestamp", "source_line", "_sub"], kind="stable")
        counted = order.groupby([order["learner_id"], order["step_id"]], sort=False).cumcount() + 1
        out.loc[missing, "attempt"] = counted.reindex(out.index)[missing].astype("Int64")
    return out.drop(columns="_sub"), reps


def _kcs_frame(out: pd.DataFrame, kcs_list: list[dict], reps: np.ndarray, cohort: str) -> pd.DataFrame:
    """attempt_kcs rows (the hint rows carry their answer's KCs)."""
    models = sorted({m for d in kcs_list for m in d})
    kc_frame = pd.DataFrame({"attempt_id": out["attempt_id"].to_numpy()})
    model_cols = {}
    for j, m in enumerate(models):
        kc_frame[f"kc{j}"] = pd.array(np.repeat(np.array([d.get(m) for d in kcs_list], dtype=object), reps) if len(reps) else [], dtype="string")
        model_cols[m] = [f"kc{j}"]
    kcs = C.split_kcs(kc_frame, id_col="attempt_id", model_cols=model_cols)
    kcs.insert(0, "cohort", cohort)
    return kcs


def _assessments_frame(p: _Pass, learner_all: pd.Series, assess_void: np.ndarray, cohort: str) -> pd.DataFrame:
    """AU results as assessments rows (``item_id = "total"``), those voided in this file left out."""
    assess = p.assess
    ai = np.asarray(assess["i"], dtype="int64")
    a_ts = C.parse_timestamps(C.blank_to_na(pd.Series(assess["ts"], dtype="string")))
    frame = pd.DataFrame({
        "cohort": cohort,
        "learner_id": learner_all.iloc[ai].to_numpy() if len(ai) else np.array([], dtype=object),
        "instrument": pd.Series(assess["instrument"], dtype="string").to_numpy(),
        "module": None,
        "phase": p.profile.phase,
        "item_id": "total",
        "score": np.asarray(assess["score"], dtype="float64"),
        "max_score": np.asarray(assess["max"], dtype="float64"),
        "timestamp": a_ts.to_numpy(),
    })[~assess_void]
    return C.conform(frame, "assessments")


def _reject_frame(p: _Pass, bad_lines: list[dict], learner_all: pd.Series) -> pd.DataFrame:
    """Rejects and skips (raw = what the statement said, never its actor or authority)."""
    rejects = C.RejectCollector(p.name)
    for b in bad_lines:
        rejects.add(pd.DataFrame({"note": ["the line is not kept: it may hold a raw learner id"]}), line=pd.Series([b["line"]]), column="$",
                    reason=f"{p.loc_word} {b['line']}: {b['reason']}")
    void_ids = {i for _, _, i in p.voids}
    skipped_voids = [(i, "verb.id", f"voiding statement: voids statement {t} (removed where it is loaded, now or later)", "skipped") for t, _, i in p.voids]
    if p.rej or skipped_voids:
        allr = p.rej + skipped_voids
        idx = [r[0] for r in allr]
        raw = pd.DataFrame([{"learner_id": learner_all.iat[i] if i not in void_ids else None, **p.info[i]} for i in idx])
        profile = p.profile
        table = ["assessments" if profile.instrument is not None and not any(r.kind in ("answer", "hint", "reveal") for r in profile.rules) else "attempts"] * len(allr)
        r = pd.DataFrame({"line": np.asarray(p.where, dtype="int64")[idx], "column": [x[1] for x in allr], "reason": [x[2] for x in allr],
                          "kind": [x[3] for x in allr], "table": table})
        for (tname, k), part in r.groupby(["table", "kind"], sort=False):
            rejects.add(raw.loc[part.index], line=part["line"], column=part["column"], reason=part["reason"], kind=k, table_name=tname)
    return rejects.frame()


def _void_audit(p: _Pass, c: pd.DataFrame, voided_here: np.ndarray, assess_void: np.ndarray, void_targets: dict,
                learner_all: pd.Series) -> pd.DataFrame:
    """Audit rows (table ``voided``) for the statements voided inside this file."""
    audit = []
    for k in np.flatnonzero(voided_here):
        target = c["attempt_id"].iat[k]
        vid, _vi = void_targets[target]
        audit.append({"statement_id": target, "voided_by": vid, "table_name": "attempts", "source_line": int(c["line"].iat[k]),
                      "row": json.dumps({"learner_id": learner_all.iat[int(c["i"].iat[k])], "item_id": c["item"].iat[k], "outcome": c["outcome"].iat[k],
                                         "timestamp": c["ts"].iat[k]}, ensure_ascii=False)})
    assess = p.assess
    for j in np.flatnonzero(assess_void):
        target = assess["sid"][j]
        vid, _vi = void_targets[target]
        audit.append({"statement_id": target, "voided_by": vid, "table_name": "assessments", "source_line": int(p.where[assess["i"][j]]),
                      "row": json.dumps({"learner_id": learner_all.iat[assess["i"][j]], "instrument": assess["instrument"][j], "score": assess["score"][j]}, ensure_ascii=False)})
    return pd.DataFrame(audit, columns=["statement_id", "voided_by", "table_name", "source_line", "row"])


def from_statements(statements, where, bad_lines: list[dict], kind: str, *, source: str, cohort: str,
                    pseudonymiser, options: dict | None = None) -> IngestResult:
    """Map parsed statements to canonical tables (shared by file ingest and LRS pull).

    ``statements`` and ``where`` may be lists, or ``where=None`` and ``statements`` an
    iterator of (location, statement) pairs that is consumed once (JSON lines are streamed
    this way: no statement is kept after it is mapped); ``bad_lines`` may grow meanwhile.

    Stages: the profile (named or sniffed from the first 2,000 statements); one pass that
    classifies each statement (:class:`_Pass`); checks of the candidate attempts, all at once;
    ids and duplicates; voiding inside the file; the attempts, attempt_kcs and assessments
    frames; rejects; the audit of what was voided.
    """
    import itertools

    options = dict(options or {})
    name = Path(source).name
    pairs = iter(statements) if where is None else iter(zip(where, statements))
    head = list(itertools.islice(pairs, 2000))
    profile, how = _profile_for([st for _, st in head], options)
    p = _Pass(profile, _fields(profile, options), name, "line" if kind == "lines" else "statement")
    for i, (loc_no, st) in enumerate(itertools.chain(head, pairs)):
        p.add(i, loc_no, st)
    learner_all = pseudonymiser.series(pd.Series(p.actor_raw, dtype="string"))

    c, ts, duration, good = _checked_candidates(p)
    _statement_ids(p, c, good, learner_all)
    # voiding inside this file: drop the targets, keep them for the audit table
    void_targets = {t: (vid, i) for t, vid, i in p.voids}
    voided_here = np.array([good[k] and c["attempt_id"].iat[k] in void_targets for k in range(len(c))], dtype=bool)
    assess_void = np.array([a in void_targets for a in p.assess["sid"]], dtype=bool)

    keep = good & ~voided_here
    out, reps = _attempts_frame(c, keep, [p.cand["hints"][k] for k in np.flatnonzero(keep)], ts, duration, learner_all,
                                pseudonymiser, cohort=cohort, name=name, options=options)
    kcs = _kcs_frame(out, [p.cand["kcs"][k] for k in np.flatnonzero(keep)], reps, cohort)
    tables = {"attempts": C.conform(out, "attempts"), "attempt_kcs": C.conform(kcs, "attempt_kcs")}
    n_assess = len(p.assess["i"])
    if profile.instrument is not None or n_assess:
        tables["assessments"] = _assessments_frame(p, learner_all, assess_void, cohort)

    res = IngestResult(source_file=source, format=NAME, n_read=len(p.where) + len(bad_lines), tables=tables,
                       rejects=_reject_frame(p, bad_lines, learner_all))
    line_all = np.asarray(p.where, dtype="int64")
    res.voids = pd.DataFrame({"statement_id": [t for t, _, _ in p.voids], "voided_by": [v for _, v, _ in p.voids],
                              "source_line": [int(line_all[i]) for _, _, i in p.voids]}, dtype=object)
    res.voided_rows = _void_audit(p, c, voided_here, assess_void, void_targets, learner_all)
    n_voided = int(voided_here.sum()) + int(assess_void.sum())
    if n_voided:
        p.rule_counts["voided in this file"] += n_voided
    n_loaded_statements = len(set(out["source_line"].tolist())) + int((~assess_void).sum()) if len(out) or n_assess else 0
    res.counts = {
        "profile": profile.name, "profile_how": how, "rules": dict(p.rule_counts), "unmatched_verbs": dict(p.unmatched),
        "statements_loaded": n_loaded_statements, "statements_voided_here": n_voided,
        "rejected": sum(1 for r in p.rej if r[3] == "rejected") + len(bad_lines), "skipped": sum(1 for r in p.rej if r[3] == "skipped") + len(p.voids),
    }
    res.notes = _notes(res.counts)
    return res


def _notes(counts: dict) -> list[str]:
    how = {"named": "named", "sniffed": "sniffed from the statements", "default": "default: no platform profile fits"}[counts["profile_how"]]
    out = [f"  xAPI profile: {counts['profile']} ({how})"]
    if counts["rules"]:
        out.append("  statements per rule: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts["rules"].items())))
    if counts["unmatched_verbs"]:
        out.append("  statements no rule takes, by verb: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts["unmatched_verbs"].items(), key=lambda kv: -kv[1])))
    return out
