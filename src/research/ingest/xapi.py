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
    loads = json.loads
    for number, line in enumerate(text.splitlines(), start=1):  # parsing is per line by nature
        if not line.strip():
            continue
        try:
            st = loads(line)
        except json.JSONDecodeError as exc:
            bad.append({"line": number, "reason": f"bad JSON: {exc.msg} at column {exc.colno}"})
            continue
        except RecursionError:
            bad.append({"line": number, "reason": "bad JSON: nested too deeply to be an xAPI statement"})
            continue
        if "\\u" in line and _SURROGATE.search(line) and _bad_unicode(st):
            bad.append({"line": number, "reason": SURROGATE_REASON})
            continue
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
    loads = json.loads
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
            if not line.strip():
                continue
            try:
                st = loads(line)
            except json.JSONDecodeError as exc:
                bad.append({"line": number, "reason": f"bad JSON: {exc.msg} at column {exc.colno}"})
                continue
            except RecursionError:
                bad.append({"line": number, "reason": "bad JSON: nested too deeply to be an xAPI statement"})
                continue
            if "\\u" in line and _SURROGATE.search(line) and _bad_unicode(st):
                bad.append({"line": number, "reason": SURROGATE_REASON})
                continue
            yield number, st


def from_statements(statements, where, bad_lines: list[dict], kind: str, *, source: str, cohort: str,
                    pseudonymiser, options: dict | None = None) -> IngestResult:
    """Map parsed statements to canonical tables (shared by file ingest and LRS pull).

    ``statements`` and ``where`` may be lists, or ``where=None`` and ``statements`` an
    iterator of (location, statement) pairs that is consumed once (JSON lines are streamed
    this way: no statement is kept after it is mapped); ``bad_lines`` may grow meanwhile.
    """
    import itertools

    options = dict(options or {})
    name = Path(source).name
    pairs = iter(statements) if where is None else iter(zip(where, statements))
    head = list(itertools.islice(pairs, 2000))
    profile, how = _profile_for([st for _, st in head], options)
    pairs = itertools.chain(head, pairs)
    loc_word = "line" if kind == "lines" else "statement"
    kc_specs, kc_prefix = _kc_specs(profile, options)
    fields = profile.fields
    item_spec = fields.get("item")
    if options.get("keep_full_iri") and item_spec is not None and item_spec.last_segment:
        item_spec = XP.FieldSpec(paths=item_spec.paths)
    step_spec, page_spec, module_spec = fields.get("step"), fields.get("page"), fields.get("module")
    attempt_spec, session_spec, response_spec = fields.get("attempt"), fields.get("session"), fields.get("response")
    item_col = item_spec.describe() if item_spec is not None else "object.id"
    if not page_spec and profile.name == "adl":
        page_spec = XP.FieldSpec(paths=[("context", "contextActivities", "parent", "id")], last_segment=True)
        module_spec = XP.FieldSpec(paths=[("context", "contextActivities", "grouping", "id")], last_segment=True)

    actor_raw: list = []
    where: list[int] = []
    bodies: dict[int, str] = {}  # content of statements without an id (for a stable hashed id)
    rule_counts: Counter = Counter()
    unmatched: Counter = Counter()
    # rejects: (index, column, reason, kind)
    rej: list[tuple[int, str, str, str]] = []
    cand = {k: [] for k in ("i", "sid", "item", "step", "page", "module", "attempt", "outcome", "response", "ts", "dur", "session", "hints", "kcs", "rule")}
    assess = {k: [] for k in ("i", "instrument", "score", "max", "ts", "rule", "sid")}
    voids: list[tuple[str, str, int]] = []  # target, voiding id, index
    info: list[dict] = []
    answer_verbs = ", ".join(profile.verbs_by_kind("answer")) or "none"
    hint_verbs = ", ".join(profile.verbs_by_kind("hint")) or "none"
    ctx_ext = ("context", "extensions")

    for i, (loc_no, st) in enumerate(pairs):
        where.append(loc_no)
        actor_raw.append(None)
        info.append({})
        loc = f"{loc_word} {loc_no}"
        if not isinstance(st, dict):
            rej.append((i, "$", f"{loc}: not a JSON object", "rejected"))
            continue
        actor = st.get("actor")
        if isinstance(actor, dict):
            acc = actor.get("account")
            a = acc.get("name") if isinstance(acc, dict) else None
            for k in ("mbox", "mbox_sha1sum", "openid"):
                if a is None or a == "":
                    a = actor.get(k)
            actor_raw[i] = _str(a) if a not in (None, "") else None
        verb = st.get("verb")
        verb_id = verb.get("id") if isinstance(verb, dict) else None
        verb_id = verb_id if isinstance(verb_id, str) and verb_id else None
        obj = st.get("object")
        object_id = obj.get("id") if isinstance(obj, dict) else None
        object_id = _str(object_id) if object_id is not None else None
        sid = st.get("id") if isinstance(st.get("id"), str) and st.get("id") else None
        info[i] = {"id": sid, "verb.id": verb_id, "object.id": object_id, "timestamp": _str(st.get("timestamp"))}
        if verb_id == VOIDED:
            target = object_id if isinstance(obj, dict) and obj.get("objectType") == "StatementRef" else None
            rule_counts["voided"] += 1
            if target is None:
                rej.append((i, "object.id", f"{loc}: a voided statement must point at a StatementRef (object.objectType StatementRef, object.id)", "rejected"))
            else:
                voids.append((target, sid or f"{name}:{where[i]}", i))
            continue
        if actor_raw[i] is None:
            rej.append((i, "actor", f"{loc}: missing actor (account.name, mbox, mbox_sha1sum or openid)", "rejected"))
            continue
        if verb_id is None:
            rej.append((i, "verb.id", f"{loc}: missing verb", "rejected"))
            continue
        verb_name = re.sub(r"^.*[/#:]", "", verb_id.rstrip("/")).lower()
        definition = obj.get("definition") if isinstance(obj, dict) else None
        object_type = definition.get("type") if isinstance(definition, dict) else None
        cats = XP.categories_of(st)
        rule = next((r for r in profile.rules if r.matches(verb_id, verb_name, object_type, object_id, cats, st)), None)
        if rule is None:
            unmatched[verb_id] += 1
            rej.append((i, "verb.id", f"verb '{verb_name}' is not an attempt in profile '{profile.name}': no rule takes {verb_id}"
                        + (f" on {object_type}" if object_type else "") + f" (answer verbs: {answer_verbs}; hint verbs: {hint_verbs})", "skipped"))
            continue
        if rule.kind == "ignore":
            rule_counts[rule.name] += 1
            rej.append((i, "verb.id", f"verb '{verb_name}' is not an attempt: rule '{rule.name}' of profile '{profile.name}' ignores it"
                        + (f" ({rule.reason})" if rule.reason else ""), "skipped"))
            continue
        result = st.get("result") if isinstance(st.get("result"), dict) else {}
        score = result.get("score") if isinstance(result.get("score"), dict) else {}
        if rule.kind == "assessment":
            instrument = profile.instrument.value(st) if profile.instrument else object_id
            raw, mx, scaled = _number(score.get("raw")), _number(score.get("max")), _number(score.get("scaled"))
            if raw is not None and mx is None:
                rej.append((i, "result.score.max", f"{loc}: score without max: result.score.raw {score.get('raw')!r} but no result.score.max", "rejected"))
                continue
            if raw is None and scaled is not None:
                raw, mx = scaled, 1.0
            if raw is None:
                passed = rule.passed if rule.passed is not None else result.get("success")
                if not isinstance(passed, bool):
                    rej.append((i, "result.score", f"{loc}: an AU result needs result.score or a passed/failed verb", "rejected"))
                    continue
                raw, mx = (1.0 if passed else 0.0), 1.0
            if instrument is None:
                rej.append((i, "object.id", f"{loc}: missing object id (the AU)", "rejected"))
                continue
            rule_counts[rule.name] += 1
            for k, v in (("i", i), ("instrument", _str(instrument)), ("score", raw), ("max", mx), ("ts", _str(st.get("timestamp"))), ("rule", rule.name), ("sid", sid)):
                assess[k].append(v)
            continue
        # answer, hint, reveal
        item = item_spec.value(st) if item_spec is not None else object_id
        if item is None:
            reason = "missing object id" if item_col == "object.id" else f"missing item ({item_col})"
            rej.append((i, item_col, f"{loc}: {reason}", "rejected"))
            continue
        item = _str(item)
        if rule.kind == "reveal":
            rule_counts[rule.name] += 1
            rej.append((i, "verb.id", f"answer reveal on item '{item}' (verb '{verb_name}', rule '{rule.name}' of profile '{profile.name}'): "
                        "the learner was shown the answer; not an attempt", "skipped"))
            continue
        outcome = "hint"
        if rule.kind == "answer":
            correct = rule.correct or profile.correct
            if correct.rule == "success":
                ok = result.get("success")
                if isinstance(ok, str):
                    ok = {"true": True, "false": False}.get(ok.lower())
                if not isinstance(ok, bool):
                    rule_counts[rule.name + " (no result.success)"] += 1
                    rej.append((i, "verb.id", f"{loc}: answer without result.success: not a graded attempt", "skipped"))
                    continue
            elif correct.rule == "raw_equals_max":
                raw, mx = _number(score.get("raw")), _number(score.get("max"))
                if raw is None:
                    rej.append((i, "result.score.raw", f"{loc}: an answer under profile '{profile.name}' needs result.score.raw", "rejected"))
                    continue
                if mx is None:
                    rej.append((i, "result.score.max", f"{loc}: score without max: result.score.raw {score.get('raw')!r} but no result.score.max", "rejected"))
                    continue
                ok = raw == mx
            else:
                sc = _number(score.get("scaled"))
                if sc is None and _number(score.get("raw")) is not None and _number(score.get("max")):
                    sc = _number(score.get("raw")) / _number(score.get("max"))
                if sc is None:
                    rej.append((i, "result.score.scaled", f"{loc}: an answer needs result.score.scaled (or raw and max)", "rejected"))
                    continue
                ok = sc >= correct.threshold
            outcome = "correct" if ok else "incorrect"
        rule_counts[rule.name] += 1
        kcs = {}
        for model, spec in kc_specs.items():
            v = spec.value(st)
            if v is not None:
                kcs[model] = "~~".join(_str(x) for x in v if x is not None) if isinstance(v, list) else _str(v)
        if kc_prefix:
            ext = XP.get(st, ctx_ext)
            if isinstance(ext, dict):
                for k, v in ext.items():
                    if isinstance(k, str) and k.startswith(kc_prefix) and v is not None:
                        kcs[k[len(kc_prefix):].strip("/").rsplit("/", 1)[-1]] = "~~".join(map(_str, v)) if isinstance(v, list) else _str(v)
        hints = rule.hints.value(st) if rule.hints is not None else None
        step = step_spec.value(st) if step_spec is not None else None
        vals = {
            "i": i, "sid": sid, "item": item, "step": _str(step) if step is not None else item,
            "page": _str(page_spec.value(st)) if page_spec else None, "module": _str(module_spec.value(st)) if module_spec else None,
            "attempt": _str(attempt_spec.value(st)) if attempt_spec else None, "outcome": outcome,
            "response": _str(response_spec.value(st)) if response_spec else None,
            "ts": _str(st.get("timestamp")), "dur": _str(result.get("duration")),
            "session": _str(session_spec.value(st)) if session_spec else None,
            "hints": [h for h in hints if h is not None] if isinstance(hints, list) else [],
            "kcs": kcs, "rule": rule.name,
        }
        for k, v in vals.items():
            cand[k].append(v)
        if sid is None:
            bodies[i] = json.dumps({k: v for k, v in st.items() if k not in ("actor", "authority")}, sort_keys=True, default=str)

    learner_all = pseudonymiser.series(pd.Series(actor_raw, dtype="string"))
    line_all = np.asarray(where, dtype="int64")

    # ---- vectorised checks on candidate attempts
    c = pd.DataFrame({k: v for k, v in cand.items() if k not in ("hints", "kcs")})
    if c.empty:
        c = pd.DataFrame({k: pd.Series(dtype=object) for k in cand if k not in ("hints", "kcs")})
    c["i"] = c["i"].astype("int64")
    c["line"] = line_all[c["i"].to_numpy()] if len(c) else np.array([], dtype="int64")
    ts_text = C.blank_to_na(c["ts"].astype("string"))
    ts = C.parse_timestamps(ts_text)
    duration, bad_duration = iso_duration_seconds(c["dur"].astype("string"))
    attempt, bad_attempt = C.parse_integers(c["attempt"].astype("string"), missing=())
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
        rej.append((i, str(bcol.iat[idx]), f"{loc_word} {where[i]}: {breason.iat[idx]}", "rejected"))
    good = ~bad.to_numpy()

    # ---- ids, then duplicates (first kept)
    sid = c["sid"].astype(object).where(c["sid"].notna(), None).to_numpy().copy()
    need = [k for k in np.flatnonzero(good) if sid[k] is None]
    if need:
        body = [bodies[int(c["i"].iat[j])] for j in need]
        canon = pd.DataFrame({"s": body, "learner": learner_all.iloc[c["i"].to_numpy()[need]].to_numpy()})
        sid[need] = C.content_ids(canon, ["learner", "s"], "xs_").to_numpy()
    seen: dict[str, int] = {}
    for k in np.flatnonzero(good):
        key = sid[k]
        if key in seen:
            j = seen[key]
            same = all(c[col].iat[k] == c[col].iat[j] for col in ("item", "outcome", "ts", "response")) and learner_all.iat[int(c["i"].iat[k])] == learner_all.iat[int(c["i"].iat[j])]
            i = int(c["i"].iat[k])
            rej.append((i, "id", f"{loc_word} {where[i]}: duplicate of {loc_word} {int(c['line'].iat[j])}" + ("" if same else " with different content") + f" (statement id {key})", "rejected"))
            good[k] = False
        else:
            seen[key] = k
    c["attempt_id"] = sid

    # ---- voiding inside this file: drop the targets, keep them for the audit table
    void_targets = {t: (vid, i) for t, vid, i in voids}
    voided_here = np.array([good[k] and c["attempt_id"].iat[k] in void_targets for k in range(len(c))], dtype=bool)
    assess_ids = assess["sid"]
    assess_void = np.array([a in void_targets for a in assess_ids], dtype=bool)

    # ---- attempts (with Torus hints expanded before their answer)
    keep = good & ~voided_here
    rows = c[keep]
    hints_list = [cand["hints"][k] for k in np.flatnonzero(keep)]
    kcs_list = [cand["kcs"][k] for k in np.flatnonzero(keep)]
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
    out = out.drop(columns="_sub")

    # ---- KCs (the hint rows carry their answer's KCs)
    models = sorted({m for d in kcs_list for m in d})
    kc_frame = pd.DataFrame({"attempt_id": out["attempt_id"].to_numpy()})
    model_cols = {}
    for j, m in enumerate(models):
        kc_frame[f"kc{j}"] = pd.array(np.repeat(np.array([d.get(m) for d in kcs_list], dtype=object), reps) if len(reps) else [], dtype="string")
        model_cols[m] = [f"kc{j}"]
    kcs = C.split_kcs(kc_frame, id_col="attempt_id", model_cols=model_cols)
    kcs.insert(0, "cohort", cohort)

    # ---- assessments
    a = pd.DataFrame({k: v for k, v in assess.items() if k != "sid"})
    tables = {"attempts": C.conform(out, "attempts"), "attempt_kcs": C.conform(kcs, "attempt_kcs")}
    if profile.instrument is not None or len(a):
        ai = np.asarray(assess["i"], dtype="int64")
        a_ts = C.parse_timestamps(C.blank_to_na(pd.Series(assess["ts"], dtype="string")))
        keep_a = ~assess_void
        frame = pd.DataFrame({
            "cohort": cohort,
            "learner_id": learner_all.iloc[ai].to_numpy() if len(ai) else np.array([], dtype=object),
            "instrument": pd.Series(assess["instrument"], dtype="string").to_numpy(),
            "module": None,
            "phase": profile.phase,
            "item_id": "total",
            "score": np.asarray(assess["score"], dtype="float64"),
            "max_score": np.asarray(assess["max"], dtype="float64"),
            "timestamp": a_ts.to_numpy(),
        })[keep_a]
        tables["assessments"] = C.conform(frame, "assessments")

    # ---- rejects (raw = what the statement said, never its actor or authority)
    rejects = C.RejectCollector(name)
    for b in bad_lines:
        rejects.add(pd.DataFrame({"note": ["the line is not kept: it may hold a raw learner id"]}), line=pd.Series([b["line"]]), column="$",
                    reason=f"{loc_word} {b['line']}: {b['reason']}")
    void_ids = {i for _, _, i in voids}
    skipped_voids = [(i, "verb.id", f"voiding statement: voids statement {t} (removed where it is loaded, now or later)", "skipped") for t, _, i in voids]
    if rej or skipped_voids:
        allr = rej + skipped_voids
        idx = [r[0] for r in allr]
        raw = pd.DataFrame([{"learner_id": learner_all.iat[i] if i not in void_ids else None, **info[i]} for i in idx])
        table = ["assessments" if profile.instrument is not None and not any(r.kind in ("answer", "hint", "reveal") for r in profile.rules) else "attempts"] * len(allr)
        r = pd.DataFrame({"line": line_all[idx], "column": [x[1] for x in allr], "reason": [x[2] for x in allr], "kind": [x[3] for x in allr], "table": table})
        for (tname, k), part in r.groupby(["table", "kind"], sort=False):
            rejects.add(raw.loc[part.index], line=part["line"], column=part["column"], reason=part["reason"], kind=k, table_name=tname)

    # ---- audit rows for targets voided inside this file
    audit = []
    for k in np.flatnonzero(voided_here):
        target = c["attempt_id"].iat[k]
        vid, vi = void_targets[target]
        audit.append({"statement_id": target, "voided_by": vid, "table_name": "attempts", "source_line": int(c["line"].iat[k]),
                      "row": json.dumps({"learner_id": learner_all.iat[int(c["i"].iat[k])], "item_id": c["item"].iat[k], "outcome": c["outcome"].iat[k],
                                         "timestamp": c["ts"].iat[k]}, ensure_ascii=False)})
    for j in np.flatnonzero(assess_void):
        target = assess_ids[j]
        vid, vi = void_targets[target]
        audit.append({"statement_id": target, "voided_by": vid, "table_name": "assessments", "source_line": int(line_all[assess["i"][j]]),
                      "row": json.dumps({"learner_id": learner_all.iat[assess["i"][j]], "instrument": assess["instrument"][j], "score": assess["score"][j]}, ensure_ascii=False)})
    for _ in range(int(voided_here.sum()) + int(assess_void.sum())):
        rule_counts["voided in this file"] += 1
    n_loaded_statements = len(set(out["source_line"].tolist())) + int((~assess_void).sum()) if len(out) or len(a) else 0
    res = IngestResult(
        source_file=source,
        format=NAME,
        n_read=len(where) + len(bad_lines),
        tables=tables,
        rejects=rejects.frame(),
    )
    res.voids = pd.DataFrame({"statement_id": [t for t, _, _ in voids], "voided_by": [v for _, v, _ in voids],
                              "source_line": [int(line_all[i]) for _, _, i in voids]}, dtype=object)
    res.voided_rows = pd.DataFrame(audit, columns=["statement_id", "voided_by", "table_name", "source_line", "row"])
    res.counts = {
        "profile": profile.name, "profile_how": how, "rules": dict(rule_counts), "unmatched_verbs": dict(unmatched),
        "statements_loaded": n_loaded_statements, "statements_voided_here": int(voided_here.sum()) + int(assess_void.sum()),
        "rejected": sum(1 for r in rej if r[3] == "rejected") + len(bad_lines), "skipped": sum(1 for r in rej if r[3] == "skipped") + len(voids),
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
