"""xAPI statements exported from a Learning Record Store -> attempts + attempt_kcs.

Accepted files: a JSON array of statements, JSON lines (one statement per line), or an
LRS response ``{"statements": [...]}``.

Mapping
-------
actor
    ``learner_id``: ``actor.account.name``, else ``actor.mbox``, ``actor.mbox_sha1sum``,
    ``actor.openid`` (pseudonymised before anything else; the actor object is dropped).
verb (the last segment of ``verb.id``)
    ``answered``, ``attempted``: an attempt; ``result.success`` true -> correct, false ->
    incorrect; without ``result.success`` the statement is skipped (not graded).
    ``asked`` and any verb whose id contains ``hint`` -> hint. Every other verb
    (completed, experienced, launched, initialized, terminated, progressed, passed,
    failed, voided, ...) is skipped with the verb in the reason.
object.id
    ``item_id``: the last path segment of the IRI (option ``keep_full_iri=True`` keeps the
    whole IRI). ``step_id`` = the ``.../step`` extension (context, result or object
    definition) when there is one, else ``item_id``.
result.response, result.duration
    ``response``; ``duration_s`` from the ISO 8601 duration (``PT1M30.5S``).
timestamp
    ``timestamp`` converted to UTC, timezone-naive.
context.contextActivities
    ``page`` = the first ``parent`` activity, ``module`` = the first ``grouping`` activity
    (last path segment of their ids).
KCs
    from context extensions. Option ``kc_extensions`` maps a KC model name to an extension
    IRI (``kc_extension`` = one IRI, model = its last segment). By default every context
    extension whose key starts with ``https://w3id.org/xapi/course-research/kc/`` gives a
    KC model named by the key's last segment. A value may be a string (``~~`` separates
    several KCs) or a list of strings.
attempt
    the ``.../attempt`` extension (context or result) when present, else counted per
    learner and step in time order (hints count, as in DataShop).
id
    ``attempt_id`` = the statement id (``xs_`` + md5 of the statement when it has none).

Rejects: bad JSON lines and statements without actor, verb, object id or timestamp are
rejected with the JSON path as column (``actor``, ``verb.id``, ``object.id``,
``timestamp``, ``result.duration``, ...). ``source_line`` is the line for JSON lines, and
the 1-based statement number for a JSON array (the reason then says "statement N").
``n_read`` is the number of statements (JSON lines: non-blank lines) and equals
``len(attempts) + len(rejects)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from research.errors import ConfigError, DataError
from research.ingest import _common as C
from research.ingest.base import IngestResult
from research.ingest.datashop_tx import check_options

NAME = "xapi"
KC_PREFIX = "https://w3id.org/xapi/course-research/kc/"
ATTEMPT_SUFFIX = "/attempt"
STEP_SUFFIX = "/step"
ANSWER_VERBS = {"answered", "attempted", "responded"}
HINT_VERBS = {"asked"}
OPTIONS = {"kc_extensions", "kc_extension", "keep_full_iri", "course_version", "encoding"}
SEP = "\u241f"  # flattening separator: extension keys are IRIs full of dots


def sniff(path: Path, head: str) -> bool:
    text = head.lstrip("\ufeff \t\r\n")
    return text[:1] in ("[", "{") and (('"actor"' in head and '"verb"' in head) or '"statements"' in head)


def _parse(path: Path, encoding: str) -> tuple[list, list[int], list[dict], str]:
    """(statements, their locations, bad lines, kind) where kind is 'lines' or 'array'."""
    text = path.read_text(encoding=encoding) if encoding.lower() not in ("utf-8", "utf8") else None
    if text is None:
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise C.utf8_error(path, data.count(b"\n", 0, exc.start) + 1, exc.start, data[exc.start]) from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise DataError(f"{path.name}: the file is empty (no statements)")
    stripped = text.lstrip()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        if stripped.startswith("["):
            raise DataError(f"{path.name}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        doc = None
    if doc is not None:
        if isinstance(doc, dict) and isinstance(doc.get("statements"), list):
            doc = doc["statements"]
        elif isinstance(doc, dict):
            doc = [doc]
        if not isinstance(doc, list):
            raise DataError(f"{path.name}: expected a JSON array of xAPI statements, a {{\"statements\": [...]}} object or JSON lines")
        return doc, list(range(1, len(doc) + 1)), [], "array"
    # JSON lines: parse line by line so one bad line is one reject
    statements, where, bad = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):  # parsing is per line by nature
        if not line.strip():
            continue
        try:
            statements.append(json.loads(line))
            where.append(number)
        except json.JSONDecodeError as exc:
            bad.append({"line": number, "reason": f"bad JSON: {exc.msg} at column {exc.colno}"})
    return statements, where, bad, "lines"


def _last_segment(s: pd.Series) -> pd.Series:
    return s.str.rstrip("/").str.replace(r"^.*[/#:]", "", regex=True)


def _first_activity_id(s: pd.Series) -> pd.Series:
    """The id of the first activity of a contextActivities entry (list or single object)."""
    def first(v):
        if isinstance(v, list):
            v = v[0] if v else None
        return v.get("id") if isinstance(v, dict) else None
    return pd.Series(s.map(first), index=s.index, dtype="string")


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


def _col(flat: pd.DataFrame, *path: str) -> pd.Series:
    name = SEP.join(path)
    if name in flat.columns:
        return flat[name]
    return pd.Series(None, index=flat.index, dtype=object)


def _text(flat: pd.DataFrame, *path: str) -> pd.Series:
    s = _col(flat, *path)
    return C.blank_to_na(s.astype(object).where(s.notna(), None).map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)).astype("string"))


def read(path, *, cohort: str, pseudonymiser, options: dict | None = None) -> IngestResult:
    path = Path(path)
    options = check_options(options, OPTIONS, NAME)
    statements, where, bad_lines, kind = _parse(path, options.get("encoding", "utf-8"))
    rejects = C.RejectCollector(path.name)
    loc = lambda i: f"line {i}" if kind == "lines" else f"statement {i}"  # noqa: E731

    for b in bad_lines:  # malformed JSON lines: few
        note = "the line is not kept: it may hold a raw learner id"
        rejects.add(pd.DataFrame({"note": [note]}), line=pd.Series([b["line"]]), column="$", reason=f"line {b['line']}: {b['reason']}")

    is_obj = np.array([isinstance(s, dict) for s in statements], dtype=bool)
    flat = pd.json_normalize([s if isinstance(s, dict) else {} for s in statements], sep=SEP)
    flat.index = pd.RangeIndex(len(statements))
    line = pd.Series(where, index=flat.index, dtype="int64")

    # ---- pseudonymise the actor first, then drop every actor field
    actor = _text(flat, "actor", "account", "name")
    for alt in (("actor", "mbox"), ("actor", "mbox_sha1sum"), ("actor", "openid")):
        actor = actor.fillna(_text(flat, *alt))
    learner = pseudonymiser.series(actor)
    flat = flat.drop(columns=[c for c in flat.columns if c == "actor" or c.startswith("actor" + SEP)])
    del actor

    verb_id = _text(flat, "verb", "id")
    verb = _last_segment(verb_id).str.lower()
    success = _col(flat, "result", "success")
    success = success.map(lambda v: v if isinstance(v, bool) else {"true": True, "false": False}.get(str(v).lower()) if v is not None and v == v else None)
    is_answer = verb.isin(list(ANSWER_VERBS)).fillna(False)
    is_hint = (verb.isin(list(HINT_VERBS)) | verb_id.str.contains("hint", case=False, regex=False)).fillna(False)
    outcome = pd.Series(pd.NA, index=flat.index, dtype="string")
    outcome[is_answer & (success == True)] = "correct"  # noqa: E712
    outcome[is_answer & (success == False)] = "incorrect"  # noqa: E712
    outcome[is_hint] = "hint"

    object_id = _text(flat, "object", "id")
    item = object_id if options.get("keep_full_iri") else _last_segment(object_id)
    timestamp_text = _text(flat, "timestamp")
    ts = C.parse_timestamps(timestamp_text)
    duration, bad_duration = iso_duration_seconds(_text(flat, "result", "duration"))

    def extension(suffix: str) -> pd.Series:
        out = pd.Series(pd.NA, index=flat.index, dtype="string")
        for c in flat.columns:
            if c.endswith(suffix) and SEP + "extensions" + SEP in c:
                out = out.fillna(_text(flat, c))
        return out

    attempt, bad_attempt = C.parse_integers(extension(ATTEMPT_SUFFIX), missing=())
    step = extension(STEP_SUFFIX).fillna(item)

    conditions = [
        (~pd.Series(is_obj, index=flat.index), "$", lambda m: pd.Series([f"{loc(i)}: not a JSON object" for i in line[m]], index=line[m].index)),
        (learner.isna(), "actor", lambda m: pd.Series([f"{loc(i)}: missing actor (account.name, mbox, mbox_sha1sum or openid)" for i in line[m]], index=line[m].index)),
        (verb_id.isna(), "verb.id", lambda m: pd.Series([f"{loc(i)}: missing verb" for i in line[m]], index=line[m].index)),
    ]
    rejected, rcol, rreason = C.first_reason(conditions, flat.index)
    skipped = ~rejected & outcome.isna()
    if skipped.any():
        why = pd.Series(np.where(is_answer[skipped], "answer without result.success: not a graded attempt",
                                 "verb '" + verb[skipped].fillna("").astype(str) + "' is not an attempt (attempt verbs: answered, attempted, responded; hint verbs: asked, *hint*)"),
                        index=verb[skipped].index)
        rows = _reject_rows(flat, learner)[skipped]
        rejects.add(rows, line=line[skipped], column="verb.id", reason=why, kind="skipped")
    more = [
        (object_id.isna(), "object.id", "missing object id"),
        (timestamp_text.isna(), "timestamp", "missing timestamp"),
        (ts.isna(), "timestamp", lambda m: "cannot parse timestamp " + C.quoted(timestamp_text[m]) + "; expected ISO 8601, e.g. 2024-03-01T10:00:00Z"),
        (bad_duration, "result.duration", lambda m: "result.duration " + C.quoted(_text(flat, "result", "duration")[m]) + " is not an ISO 8601 duration such as PT1M30S"),
        (bad_attempt | (attempt < 1).fillna(False), "context.extensions.attempt", "attempt extension is not a whole number >= 1"),
    ]
    rej2, rcol2, rreason2 = C.first_reason([(~rejected & ~skipped & c, col, why) for c, col, why in more], flat.index)
    rcol = rcol.fillna(rcol2)
    rreason = rreason.fillna(rreason2.where(rreason2.isna(), line.map(loc).astype("string") + ": " + rreason2))
    rejected |= rej2

    ok = ~rejected & ~skipped
    attempt_id = _text(flat, "id")
    need = ok & attempt_id.isna()
    if need.any():
        # content hash of the statement without its actor, plus the pseudonym: no raw id goes in
        body = [json.dumps({k: v for k, v in statements[i].items() if k != "actor"}, sort_keys=True, default=str) for i in np.flatnonzero(need.to_numpy())]
        canon = pd.DataFrame({"s": body, "learner": learner[need].to_numpy()}, index=need[need].index)
        attempt_id[need] = C.content_ids(canon, ["learner", "s"], "xs_")
    dup, dup_reason = C.duplicate_rejects(attempt_id[ok], pd.DataFrame({"l": learner, "v": verb_id, "o": object_id, "t": timestamp_text, "r": _text(flat, "result", "response")})[ok], ["l", "v", "o", "t", "r"], line[ok])
    dup_idx = dup[dup].index
    rejected[dup_idx] = True
    rcol[dup_idx] = "id"
    rreason[dup_idx] = (line[dup_idx].map(loc).astype("string") + ": " + dup_reason[dup_idx].str.replace("line", "line" if kind == "lines" else "statement"))
    if rejected.any():
        rejects.add(_reject_rows(flat, learner)[rejected], line=line[rejected], column=rcol[rejected], reason=rreason[rejected])
    ok = ~rejected & ~skipped

    att = pd.DataFrame(
        {
            "cohort": cohort,
            "attempt_id": attempt_id,
            "learner_id": learner,
            "course_version": options.get("course_version"),
            "session_id": _text(flat, "context", "registration"),
            "module": _last_segment(_first_activity_id(_col(flat, "context", "contextActivities", "grouping"))),
            "page": _last_segment(_first_activity_id(_col(flat, "context", "contextActivities", "parent"))),
            "item_id": item,
            "step_id": step,
            "attempt": attempt,
            "outcome": outcome,
            "response": _text(flat, "result", "response"),
            "timestamp": ts,
            "duration_s": duration,
            "source_file": path.name,
            "source_line": line,
        }
    )[ok]
    missing = att["attempt"].isna()
    if missing.any():
        order = att.sort_values(["timestamp", "source_line"], kind="stable")
        counted = order.groupby([order["learner_id"], order["step_id"]], sort=False).cumcount() + 1
        att.loc[missing, "attempt"] = counted.reindex(att.index)[missing].astype("Int64")

    frame, model_cols = _kc_frame(flat, attempt_id, ok, options)
    kcs = C.split_kcs(frame, id_col="attempt_id", model_cols=model_cols)
    kcs.insert(0, "cohort", cohort)
    return IngestResult(
        source_file=str(path),
        format=NAME,
        n_read=len(statements) + len(bad_lines),
        tables={"attempts": C.conform(att, "attempts"), "attempt_kcs": C.conform(kcs, "attempt_kcs")},
        rejects=rejects.frame(),
    )


def _reject_rows(flat: pd.DataFrame, learner: pd.Series) -> pd.DataFrame:
    """The statement's fields for a reject's raw JSON: learner pseudonymised, actor dropped."""
    rows = flat.copy()
    rows.insert(0, "learner_id", learner)
    rows.columns = [c.replace(SEP, ".") for c in rows.columns]
    return rows


def _kc_frame(flat: pd.DataFrame, attempt_id: pd.Series, ok: pd.Series, options: dict):
    """Arguments for :func:`C.split_kcs`: a frame of KC cells per model."""
    ctx = "context" + SEP + "extensions" + SEP
    models: dict[str, str] = {}
    if "kc_extensions" in options:
        spec = options["kc_extensions"]
        if not isinstance(spec, dict):
            raise ConfigError(f"kc_extensions must map a KC model name to an extension IRI, got {spec!r}")
        models = {str(m): ctx + iri for m, iri in spec.items()}
    elif "kc_extension" in options:
        iri = str(options["kc_extension"])
        models = {iri.rstrip("/").rsplit("/", 1)[-1]: ctx + iri}
    else:
        models = {c[len(ctx) + len(KC_PREFIX):].strip("/").rsplit("/", 1)[-1]: c for c in flat.columns if c.startswith(ctx + KC_PREFIX)}
    frame = pd.DataFrame({"attempt_id": attempt_id[ok]})
    model_cols = {}
    for i, (model, column) in enumerate(models.items()):
        values = _col(flat, column)[ok]
        joined = values.map(lambda v: "~~".join(map(str, v)) if isinstance(v, list) else (None if v is None or v != v else str(v)))
        frame[f"kc{i}"] = joined.astype("string")
        model_cols[model] = [f"kc{i}"]
    return frame, model_cols
