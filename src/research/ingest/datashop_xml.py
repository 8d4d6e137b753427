"""DataShop tutor-message XML (DTD version 4, as DataShop documents it and OLI Torus writes it)
-> attempts + attempt_kcs (+ custom fields), the same canonical tables as the tab-delimited
transaction export (:mod:`research.ingest.datashop_tx`).

The file is streamed: it is read in 1 MiB chunks, so no tree of the file is ever built.
(``iterparse`` with element clearing was 14x slower than the tab-delimited ingest: one Python
event per element.) A run of complete plain messages (up to 4 MiB: no CDATA, comments,
entities or single-quoted attributes, DataShop's element order, each tool message before its
tutor message) is read with one ``findall`` of one pattern over the decoded run, and
its columns are built at once (pairing by transaction id with a dict, strings per column), with
no Python object per message. Anything else in a run sends that run to the message-by-message
reader: each message (start tag to end tag) is matched on its own, or parsed with
``xml.etree.ElementTree.fromstring``, and dropped; both readers give the same rows. What is
kept is the columns of the transactions read so far and of the context messages. Markup is
checked per message; text between messages (declaration, root tags, whitespace) is skipped.
A file may be a whole document (``tutor_related_message_sequence`` root, or OLI's
``log_action`` envelope, whose text may be a URL-encoded sequence) or, as Torus's dataset
job writes its parts, a bare run of messages without a root element.

Mapping (DataShop's tutor-message model)
---------------------------------------
``context_message`` (START_PROBLEM, START_TUTOR, ...)
    opens a problem: its ``dataset`` holds the ``level`` hierarchy and the ``problem``;
    ``meta`` gives defaults for the messages that refer to it (``context_message_id``).
``tool_message`` + ``tutor_message`` with the same ``semantic_event/@transaction_id``
    one transaction. The tutor message (RESULT, HINT_MSG) carries the evaluation; a tool
    message (ATTEMPT, HINT_REQUEST) the learner's input. A tutor message without its tool
    message is still a transaction; a tool message the tutor never evaluated is skipped
    ("not an attempt", like a blank Outcome in the tab-delimited export).
fields
    ``learner_id`` = ``meta/user_id`` (pseudonymised at once), ``session_id`` =
    ``meta/session_id``, ``timestamp`` = ``meta/time`` in ``meta/time_zone`` -> UTC;
    ``item_id`` = ``problem_name`` (else the context's problem, else the enclosing
    ``log_action``'s ``external_object_id``, as Torus reads OLI logs), ``step_id`` =
    ``event_descriptor/selection`` (else the problem), ``response`` = the tool message's
    ``input`` (else the tutor's), ``outcome`` = ``action_evaluation`` mapped as DataShop
    outcomes are (CORRECT; INCORRECT, ERROR, BUG; HINT...), ``attempt_id`` = the
    transaction id, ``attempt`` counted per learner, problem and step in time order;
    ``page`` = the innermost level, ``module`` the level above it.
KCs
    every ``skill`` of the tutor message: ``skill/name``, in the KC model
    ``skill/model_name`` (``Default`` when absent), several per transaction allowed.
custom fields
    ``custom_field`` name/value pairs of the tutor message go to the warehouse table
    ``custom_fields`` (cohort, attempt_id, name, value).

Options: ``user_id`` and ``time`` for messages without ``meta`` (OLI's legacy logs, where
Torus takes both from the request), ``default_time_zone`` (``UTC``), ``course_version``.

``source_line`` is the message's ordinal number in the file (1-based). For every file
``n_read`` (messages that are transactions or candidate transactions: tutor messages plus
unevaluated tool messages) equals ``len(attempts) + len(rejects)``.
"""

from __future__ import annotations

import gc
import io
import re
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from research.errors import DataError
from research.ingest import _common as C
from research.ingest.base import IngestResult
from research.ingest.datashop_tx import OUTCOMES, check_options

__all__ = [
    "CUSTOM_SQL", "NAME", "OPTIONS", "XMLReader", "frame_result", "read", "sniff",
    "store_custom_fields"
]

NAME = "datashop-xml"
OPTIONS = {"user_id", "time", "default_time_zone", "course_version", "encoding"}
MESSAGES = {"context_message", "tool_message", "tutor_message"}
CHUNK = 1 << 20
BULK = 4 << 20  # most bytes read in one pass (a run of complete messages)
_TOKEN = re.compile(rb"<(log_action|context_message|tool_message|tutor_message)\b[^>]*>?|</log_action\s*>")


def sniff(path: Path, head: str) -> bool:
    text = head.lstrip("\ufeff \t\r\n")
    if not text.startswith("<"):
        return False
    return any(t in head[:65536] for t in ("<tutor_related_message_sequence", "<context_message", "<tool_message", "<tutor_message")) or (
        "<log_action" in head and "tutor_message.dtd" in head)


_R_CANON = re.compile(
    r"<(?P<tag>tool_message|tutor_message)(?P<attrs>[^>]*)>\s*"
    r"(?:<meta>\s*(?:<user_id>(?P<user>[^<]*)</user_id>\s*)?(?:<session_id>(?P<sess>[^<]*)</session_id>\s*)?"
    r"(?:<time>(?P<time>[^<]*)</time>\s*)?(?:<time_zone>(?P<zone>[^<]*)</time_zone>\s*)?</meta>\s*)?"
    r"(?:<problem_name>(?P<problem>[^<]*)</problem_name>\s*)?"
    r"(?:<semantic_event(?P<sem>[^>]*?)/>\s*|<semantic_event(?P<sem2>[^>]*)>\s*</semantic_event>\s*)?"
    r"(?:<event_descriptor>\s*(?:<selection>(?P<sel>[^<]*)</selection>\s*)?(?:<action>[^<]*</action>\s*)?"
    r"(?:<input>(?P<inp>[^<]*)</input>\s*)?</event_descriptor>\s*)?"
    r"(?:<action_evaluation(?P<evattrs>[^>]*)>(?P<eval>[^<]*)</action_evaluation>\s*)?"
    r"(?:<tutor_advice>[^<]*</tutor_advice>\s*)?"
    r"(?P<skills>(?:<skill\b[^>]*>(?:(?!</skill>).)*</skill>\s*)*)"
    r"</(?P=tag)>", re.S)


_R_CTXMSG = re.compile(
    r"<context_message(?P<attrs>[^>]*)>\s*"
    r"(?:<meta>\s*(?:<user_id>(?P<user>[^<]*)</user_id>\s*)?(?:<session_id>(?P<sess>[^<]*)</session_id>\s*)?"
    r"(?:<time>(?P<time>[^<]*)</time>\s*)?(?:<time_zone>(?P<zone>[^<]*)</time_zone>\s*)?</meta>\s*)?"
    r"(?P<dataset><dataset>(?:(?!</dataset>).)*</dataset>)?\s*</context_message>", re.S)


# A run of plain messages, read in one pass: one match per message, groups in _B_* order. Text
# may not hold markup or entities, attributes no entities or single quotes (attribute strings are
# captured whole and searched afterwards, so their order does not matter; the context message id
# and transaction id are also captured on their own where they come first, the usual case).
# Any other markup between or in messages (CDATA, comments, entities, several semantic events, a
# message the pattern does not take whole) matches the last branch, and the run is then read
# message by message instead.
_BULK = (
    r"<(tool_message|tutor_message|context_message)(?=\s+context_message_id=\"([^\"]*)\")?((?:\s[^>'&]*)?)(?<!/)>\s*"
    r"(?:<meta>\s*(?:<user_id>([^<&]*)</user_id>\s*)?(?:<session_id>([^<&]*)</session_id>\s*)?"
    r"(?:<time>([^<&]*)</time>\s*)?(?:<time_zone>([^<&]*)</time_zone>\s*)?</meta>\s*)?"
    r"(?:<problem_name>([^<&]*)</problem_name>\s*)?"
    r"(?:<semantic_event(?=\s+transaction_id=\"([^\"]*)\")?((?:\s[^>'&]*)?)(?:(?<=/)>|(?<!/)>\s*</semantic_event>)\s*)?"
    r"(?:<event_descriptor>\s*(?:<selection>([^<&]*)</selection>\s*)?(?:<action>[^<&]*</action>\s*)?"
    r"(?:<input>([^<&]*)</input>\s*)?</event_descriptor>\s*)?"
    r"(?:<action_evaluation((?:\s[^>'&/]*)?)>([^<&]*)</action_evaluation>\s*)?"
    r"(?:<tutor_advice>[^<&]*</tutor_advice>\s*)?"
    r"((?:<skill(?:\s[^>'&/]*)?>\s*(?:<(\w+)>[^<&]*</\16>\s*)*</skill>\s*)*)"
    r"((?:<custom_field>\s*<name>[^<&]*</name>\s*<value>[^<&]*</value>\s*</custom_field>\s*)*)"
    r"(?:(<dataset>[^<]*(?:<(?!/dataset>)[^<]*)*</dataset>)\s*)?"
    r"</\1>"
    r"|(<)")  # any other markup: the run is not plain
_R_BULK = re.compile(_BULK)
# the same without the character classes (about a quarter faster), for runs without '&'; single
# quotes in the attributes it captures are checked afterwards
_R_BULK_FAST = re.compile(_BULK.replace("[^<&]", "[^<]").replace("[^>'&/]", "[^>/]").replace("[^>'&]", "[^>]"))
(_B_TAG, _B_CTX, _B_ATTRS, _B_USER, _B_SESS, _B_TIME, _B_ZONE, _B_PROBLEM, _B_TX, _B_SEM, _B_SEL, _B_INPUT, _B_EVATTRS, _B_EVAL,
 _B_SKILLS, _B_SKCHILD, _B_CUSTOM, _B_DATASET, _B_OTHER) = range(19)
_B_TEXTS = (_B_USER, _B_SESS, _B_TIME, _B_ZONE, _B_PROBLEM, _B_SEL, _B_INPUT, _B_EVAL)
# a value (joined with NULs) that starts or ends with white space: then every value is stripped
_R_EDGE = re.compile(r"\x00(?:\s|(?<=\s\x00))")
_R_CUSTOM = re.compile(r"<custom_field>\s*<name>([^<]*)</name>\s*<value>([^<]*)</value>\s*</custom_field>")
_CLOSES = (b"</tutor_message>", b"</tool_message>", b"</context_message>")
_R_FIRST = re.compile(rb"<(tool_message|tutor_message|context_message|log_action|/log_action)\b")


class _NotBulk(Exception):
    """A run of messages the one-pass reader leaves to the message-by-message reader."""


def _hierarchy(dataset) -> tuple:
    """((level type, level name), ...) outermost first, and the problem name, of a <dataset> element."""
    levels, problem = [], None
    node = dataset
    while node is not None:
        nxt = node.find("level")
        if nxt is None:
            p = node.find("problem")
            problem = _text(p, "name") if p is not None else None
            break
        levels.append((nxt.get("type") or "", _text(nxt, "name") or ""))
        node = nxt
    return tuple(levels), problem


def _strip(v):
    if v is None:
        return None
    v = v.strip()
    return v or None
_R_CTX = re.compile(r'context_message_id="([^"]*)"')
_R_SEM = re.compile(r"<semantic_event\b([^>]*)>")
_R_TX = re.compile(r'transaction_id="([^"]*)"')
_R_NAME = re.compile(r'\bname="([^"]*)"')
_R_EVAL = re.compile(r"<action_evaluation\b([^>]*)>(.*?)</action_evaluation>", re.S)
_R_HINTNO = re.compile(r'current_hint_number="([^"]*)"')
_R_SKILL = re.compile(r"<skill\b[^>]*>(.*?)</skill>", re.S)
_R_FIELDS: dict = {}


def _field(tag: str, text: str):
    """The stripped text of the first <tag>...</tag> in ``text`` (no nested markup), or None."""
    rx = _R_FIELDS.get(tag)
    if rx is None:
        rx = _R_FIELDS[tag] = re.compile(f"<{tag}>([^<]*)</{tag}>|<{tag}/>")
    m = rx.search(text)
    if not m or m.group(1) is None:
        return None
    return m.group(1).strip() or None


def _text(el, path: str):
    if el is None:
        return None
    x = el.find(path)
    if x is None or x.text is None:
        return None
    t = x.text.strip()
    return t or None


def _objects(values) -> np.ndarray:
    a = np.empty(len(values), dtype=object)
    a[:] = values
    return a


def _strings(values) -> pd.arrays.ArrowStringArray:
    """A ``string`` column (Arrow) from a list or object array of str and None, built by Arrow."""
    return pd.arrays.ArrowStringArray(pa.array(values, type=pa.string(), from_pandas=True))


def _skill_list(raw: str) -> tuple:
    """((model, name), ...) of a run of <skill> elements (no markup inside their fields)."""
    out = []
    for sk in _R_SKILL.findall(raw):
        n = _field("name", sk)
        if n:
            out.append((_field("model_name", sk) or "Default", n))
    return tuple(out)


def _custom_list(raw: str) -> list:
    """[(name, value), ...] of a run of <custom_field> elements, as the element reader gives them."""
    return [(k.strip(), v.strip()) for k, v in _R_CUSTOM.findall(raw) if k.strip()]


@dataclass
class _BulkRun:
    """A run of plain messages matched at once: the pattern's groups as columns (``cols``), and the
    message kinds, transaction ids and tool message of each tutor message found in them."""

    cut: int
    cols: list
    strip: bool  # some text has white space at an edge
    tag: np.ndarray = None
    i_tutor: np.ndarray = None
    i_tool: np.ndarray = None
    i_ctx: np.ndarray = None
    tx: np.ndarray = None
    tutor_tx: list = None
    j: np.ndarray = None  # per tutor message: its tool message, -1 when none in the run
    datasets: np.ndarray = None

    def texts(self, k: int) -> np.ndarray:
        """Stripped text, None for empty or absent."""
        if self.strip:
            return _objects([v.strip() or None for v in self.cols[k]])
        a = _objects(self.cols[k])
        a[a == ""] = None
        return a

    def attr(self, k: int, rx: re.Pattern, first: int | None = None) -> np.ndarray:
        """An attribute's value, None when absent: captured on its own where it comes first
        (group ``first``), else found by ``rx`` in the captured attributes (group ``k``)."""
        if first is None:
            return _objects([(m.group(1) if (m := rx.search(v)) else None) if v else None for v in self.cols[k]])
        a = _objects(self.cols[first])
        raw = self.cols[k]
        for i in np.flatnonzero(a == "").tolist():
            m = rx.search(raw[i]) if raw[i] else None
            a[i] = m.group(1) if m else None
        return a


class _Chunks:
    """A binary file read in chunks of ``CHUNK`` bytes: the bytes read and not yet dropped
    (``buf``, a leading UTF-8 byte order mark removed) and the line number of their start."""

    __slots__ = ("fh", "buf", "line0", "eof")

    def __init__(self, fh):
        self.fh, self.buf, self.line0, self.eof = fh, b"", 1, False
        self.more()
        if self.buf.startswith(b"\xef\xbb\xbf"):
            self.buf = self.buf[3:]

    def more(self) -> bool:
        """Read the next chunk onto ``buf``; False at the end of the file."""
        if self.eof:
            return False
        chunk = self.fh.read(CHUNK)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def drop(self, pos: int) -> None:
        """Drop ``buf[:pos]`` (positions in ``buf`` move down by ``pos``)."""
        self.line0 += self.buf.count(b"\n", 0, pos)
        self.buf = self.buf[pos:]

    def where(self, at: int) -> str:
        """'line N' of position ``at`` in ``buf``."""
        return f"line {self.line0 + self.buf.count(chr(10).encode(), 0, at)}"


class XMLReader:
    def __init__(self, options: dict):
        self.options = options
        # one entry per context message, in file order: its id, its hierarchy (index into
        # self.hierarchies) and its meta; the last context message of an id is the one used
        self.ctx: dict[str, list] = {k: [] for k in ("id", "h", "user", "session", "time", "zone")}
        self.hierarchies: list[tuple] = []  # (levels tuple, problem), deduplicated
        self._hier_index: dict[tuple, int] = {}
        self.pending: dict[str, dict] = {}   # tool messages waiting for their tutor message
        self.rows: dict[str, list] = {k: [] for k in ("n", "tx", "user", "session", "time", "zone", "problem", "step", "input",
                                                     "outcome", "hint_number", "ctx", "skills", "custom", "kind", "reason", "lp", "ls")}
        self.envelope: list[tuple] = []  # (external_object_id, session_id) of the enclosing log_action
        self.n_messages = 0
        self.n_context = 0
        self._datasets: dict[str, int] = {}  # <dataset> text -> hierarchy index
        self._skills: dict[str, tuple] = {}  # <skill> run text -> ((model, name), ...)

    # -- one message --------------------------------------------------------------
    def message(self, el) -> None:
        """One parsed message element."""
        tag = el.tag
        meta = el.find("meta")
        meta_t = (_text(meta, "user_id"), _text(meta, "session_id"), _text(meta, "time"), _text(meta, "time_zone")) if meta is not None else (None,) * 4
        ctx_id = el.get("context_message_id")
        if tag == "context_message":
            self._context(ctx_id, meta_t, _hierarchy(el.find("dataset")))
            return
        sem = el.find("semantic_event")
        desc = el.find("event_descriptor")
        ev = el.find("action_evaluation")
        skills = []
        for s in el.findall("skill"):
            name = _text(s, "name")
            if name:
                skills.append((_text(s, "model_name") or "Default", name))
        custom = [(_text(cf, "name"), cf.findtext("value")) for cf in el.findall("custom_field")]
        self._record(tag == "tool_message", ctx_id, meta_t, sem.get("transaction_id") if sem is not None else None,
                     sem.get("name") if sem is not None else None, _text(desc, "selection"), _text(desc, "input"), _text(el, "problem_name"),
                     ev.text.strip() if ev is not None and ev.text and ev.text.strip() else None,
                     ev.get("current_hint_number") if ev is not None else None, skills, [(k, (v or "").strip()) for k, v in custom if k])

    def message_bytes(self, tag: str, body: bytes) -> None:
        """A tool or tutor message in plain markup (no CDATA, comments, entities or custom
        fields) is read with a few regular expressions; anything else with ElementTree."""
        if (b"&" in body or b"<!" in body or b"custom_field" in body or b"'" in body
                or body.count(b"<") != 2 * body.count(b"</") + body.count(b"/>")):  # unbalanced: let the parser say where
            self.message(ET.fromstring(body))
            return
        text = body.decode("utf-8")
        if tag == "context_message":
            if not self._context_bytes(text):
                self.message(ET.fromstring(body))
            return
        m = _R_CANON.fullmatch(text)
        if m is None:  # not in DataShop's element order: the parser reads it
            self.message(ET.fromstring(body))
            return
        g = m.groupdict()
        sem = g["sem"] or g["sem2"] or ""
        tx, name = _R_TX.search(sem), _R_NAME.search(sem)
        ctx = _R_CTX.search(g["attrs"])
        hint = _R_HINTNO.search(g["evattrs"]) if g["evattrs"] else None
        skills = []
        if g["skills"]:
            for sk in _R_SKILL.findall(g["skills"]):
                n = _field("name", sk)
                if n:
                    skills.append((_field("model_name", sk) or "Default", n))
        strip = _strip
        self._record(g["tag"] == "tool_message", ctx.group(1) if ctx else None,
                     (strip(g["user"]), strip(g["sess"]), strip(g["time"]), strip(g["zone"])),
                     tx.group(1) if tx else None, name.group(1) if name else None, strip(g["sel"]), strip(g["inp"]), strip(g["problem"]),
                     strip(g["eval"]), hint.group(1) if hint else None, skills, [])

    def _hier(self, hierarchy: tuple) -> int:
        idx = self._hier_index.get(hierarchy)
        if idx is None:
            idx = self._hier_index[hierarchy] = len(self.hierarchies)
            self.hierarchies.append(hierarchy)
        return idx

    def _dataset(self, ds: str) -> int:
        """The hierarchy index of a <dataset> element's text ('' for none), parsed once per distinct text."""
        idx = self._datasets.get(ds)
        if idx is None:
            idx = self._datasets[ds] = self._hier(_hierarchy(ET.fromstring(ds)) if ds else ((), None))
        return idx

    def _context(self, ctx_id, meta_t, hierarchy, h: int | None = None) -> None:
        self.n_messages += 1
        self.n_context += 1
        c = self.ctx
        c["id"].append(ctx_id)
        c["h"].append(self._hier(hierarchy) if h is None else h)
        for k, v in zip(("user", "session", "time", "zone"), meta_t):
            c[k].append(v)

    def _context_bytes(self, text: str) -> bool:
        """A plain context message: meta by regular expression, the dataset parsed once per distinct text."""
        m = _R_CTXMSG.fullmatch(text)
        if m is None:
            return False
        g = m.groupdict()
        h = self._dataset(g["dataset"] or "")
        ctx = _R_CTX.search(g["attrs"])
        self._context(ctx.group(1) if ctx else None, (_strip(g["user"]), _strip(g["sess"]), _strip(g["time"]), _strip(g["zone"])), None, h)
        return True

    def _record(self, is_tool, ctx_id, meta_t, tx, sem_name, selection, value, problem, outcome, hint_no, skills, custom) -> None:
        self.n_messages += 1
        if is_tool:
            rec = {"n": self.n_messages, "meta": meta_t, "selection": selection, "input": value, "problem": problem, "ctx": ctx_id, "name": sem_name}
            if tx is None:
                self._skip(rec, "tool message without semantic_event/@transaction_id: cannot be paired with an evaluation")
            elif tx in self.pending:
                self._skip(self.pending.pop(tx), f"tool message {tx!r} repeated before its evaluation")
                self.pending[tx] = rec
            else:
                self.pending[tx] = rec
            return
        # tutor message: one transaction
        tool = self.pending.pop(tx, None) if tx is not None else None
        m = meta_t if any(meta_t) else (tool["meta"] if tool else meta_t)
        r = self.rows
        r["n"].append(self.n_messages)
        r["tx"].append(tx)
        r["user"].append(m[0])
        r["session"].append(m[1])
        r["time"].append(m[2])
        r["zone"].append(m[3])
        r["problem"].append(problem or (tool or {}).get("problem"))
        r["step"].append(selection or (tool or {}).get("selection"))
        r["input"].append((tool or {}).get("input") or value)
        r["outcome"].append(outcome)
        r["hint_number"].append(hint_no)
        r["ctx"].append(ctx_id or (tool or {}).get("ctx"))
        r["skills"].append(skills)
        r["custom"].append(custom)
        r["kind"].append(None)
        r["reason"].append(None)
        env = self.envelope[-1] if self.envelope else (None, None)
        r["lp"].append(env[0])
        r["ls"].append(env[1])

    def _skip(self, rec: dict, reason: str) -> None:
        r = self.rows
        m = rec["meta"]
        for k, v in (("n", rec["n"]), ("tx", None), ("user", m[0]), ("session", m[1]), ("time", m[2]), ("zone", m[3]),
                     ("problem", rec["problem"]), ("step", rec["selection"]), ("input", None), ("outcome", None),
                     ("hint_number", None), ("ctx", rec["ctx"]), ("skills", []), ("custom", []), ("kind", "skipped"), ("reason", reason),
                     ("lp", None), ("ls", None)):
            r[k].append(v)

    def finish(self) -> None:
        for tx, rec in list(self.pending.items()):
            self._skip(rec, f"not an attempt: tool message {rec['name'] or ''} {tx!r} has no tutor evaluation (tutor_message)".replace("  ", " "))
        self.pending.clear()

    # -- a run of plain messages in one pass -----------------------------------------
    def bulk(self, buf: bytes, pos: int, limit: int) -> int:
        """Read the complete messages in ``buf[pos:pos + limit]`` with one ``findall`` and build
        their columns at once; return the position after the last one (``pos`` when there is
        none). Raises :class:`_NotBulk` (with the run's end) when the run needs the message-by-
        message reader: a ``log_action``, a message the pattern does not take whole, a pairing of
        tool and tutor messages other than "tool message first, one per transaction". Nothing is
        recorded before the run is known to be plain."""
        run = self._plain_run(buf, pos, limit)
        if run is None:
            return pos
        self._record_run(run)
        return run.cut

    def _plain_run(self, buf: bytes, pos: int, limit: int) -> _BulkRun | None:
        """The run of messages up to the last complete one, matched and checked to be plain (see
        :meth:`bulk`); None when it holds no message."""
        end = min(len(buf), pos + limit)
        cut = pos
        for close in _CLOSES:
            k = buf.rfind(close, pos, end)
            if k >= 0:
                cut = max(cut, k + len(close))
        first = _R_FIRST.search(buf, pos, cut)
        if first is None or b"log_action" in first.group(1):
            return None
        region = buf[first.start():cut]  # text before the first message is skipped, as between messages
        if b"log_action" in region:
            raise _NotBulk(cut)
        try:
            text = region.decode("utf-8")
        except UnicodeDecodeError:
            raise _NotBulk(cut) from None
        amp = b"&" in region
        found = (_R_BULK if amp else _R_BULK_FAST).findall(text)
        if not found:
            raise _NotBulk(cut)
        cols = list(zip(*found))
        del found
        if "<" in cols[_B_OTHER]:  # markup that is not a plain message: the message-by-message reader says what
            raise _NotBulk(cut)
        if not amp and b"'" in region and any("'" in "".join(cols[k]) for k in (_B_ATTRS, _B_SEM, _B_EVATTRS)):
            raise _NotBulk(cut)  # an attribute in single quotes: the element reader reads it
        edges = "\x00" + "\x00".join(chain.from_iterable(cols[k] for k in _B_TEXTS)) + "\x00"
        run = _BulkRun(cut=cut, cols=cols, strip=_R_EDGE.search(edges) is not None)
        del edges, text, region
        run.tag = _objects(cols[_B_TAG])
        run.i_tutor = np.flatnonzero(run.tag == "tutor_message")
        run.i_tool = np.flatnonzero(run.tag == "tool_message")
        run.i_ctx = np.flatnonzero(run.tag == "context_message")
        run.tx = run.attr(_B_SEM, _R_TX, _B_TX)
        tool_tx, run.tutor_tx = run.tx[run.i_tool].tolist(), run.tx[run.i_tutor].tolist()
        if None in tool_tx or None in run.tutor_tx:
            raise _NotBulk(cut)
        tool_at = dict(zip(tool_tx, run.i_tool.tolist()))
        if len(tool_at) != len(tool_tx) or len(set(run.tutor_tx)) != len(run.tutor_tx):
            raise _NotBulk(cut)
        if self.pending and not self.pending.keys().isdisjoint(tool_at):
            raise _NotBulk(cut)
        run.j = np.fromiter((tool_at.get(t, -1) for t in run.tutor_tx), dtype=np.int64, count=len(run.tutor_tx))
        if (run.j > run.i_tutor).any():  # evaluated before the tool message came
            raise _NotBulk(cut)
        run.datasets = _objects(cols[_B_DATASET])[run.i_ctx]
        try:
            for ds in set(run.datasets.tolist()) - self._datasets.keys():
                self._dataset(ds)
        except ET.ParseError:
            raise _NotBulk(cut) from None
        return run

    def _record_run(self, run: _BulkRun) -> None:
        """Record a plain run: its context messages, its tool messages (paired with their tutor message, or
        pending for one in a later run) and one row per tutor message."""
        base = self.n_messages
        texts, i_ctx = run.texts, run.i_ctx
        user, session, time, zone = texts(_B_USER), texts(_B_SESS), texts(_B_TIME), texts(_B_ZONE)
        problem, selection, value = texts(_B_PROBLEM), texts(_B_SEL), texts(_B_INPUT)
        ctx = run.attr(_B_ATTRS, _R_CTX, _B_CTX)
        c = self.ctx
        c["id"].extend(ctx[i_ctx].tolist())
        c["h"].extend([self._datasets[ds] for ds in run.datasets.tolist()])
        for k, a in (("user", user), ("session", session), ("time", time), ("zone", zone)):
            c[k].extend(a[i_ctx].tolist())
        self.n_context += len(i_ctx)

        j, i_tutor, tutor_tx = run.j, run.i_tutor, run.tutor_tx
        has = j >= 0
        jj = np.where(has, j, 0)

        def tool(a: np.ndarray) -> np.ndarray:
            v = a[jj]
            v[~has] = None
            return v
        t_cols = {k: tool(a) for k, a in (("user", user), ("session", session), ("time", time), ("zone", zone), ("problem", problem),
                                            ("selection", selection), ("input", value), ("ctx", ctx))}
        if self.pending:  # tool messages of the run before
            for k in np.flatnonzero(~has).tolist():
                rec = self.pending.pop(tutor_tx[k], None)
                if rec is not None:
                    for name, v in zip(("user", "session", "time", "zone"), rec["meta"]):
                        t_cols[name][k] = v
                    for name in ("problem", "selection", "input", "ctx"):
                        t_cols[name][k] = rec[name]
        used = np.zeros(len(run.tag), dtype=bool)
        used[j[has]] = True
        if not used[run.i_tool].all():  # tool messages not (yet) evaluated: wait for their tutor message
            for i in run.i_tool[~used[run.i_tool]].tolist():
                name = _R_NAME.search(run.cols[_B_SEM][i])
                self.pending[run.tx[i]] = {"n": base + i + 1, "meta": (user[i], session[i], time[i], zone[i]), "selection": selection[i],
                                           "input": value[i], "problem": problem[i], "ctx": ctx[i], "name": name.group(1) if name else None}
        self._record_tutor_rows(run, base, [a[i_tutor] for a in (user, session, time, zone)], problem[i_tutor],
                                selection[i_tutor], value[i_tutor], ctx[i_tutor], t_cols)
        self.n_messages = base + len(run.tag)

    def _record_tutor_rows(self, run: _BulkRun, base: int, meta: list, problem, selection, value, own_ctx, t_cols: dict) -> None:
        """One row per tutor message; what it does not say itself comes from its tool message."""
        i_tutor = run.i_tutor
        nometa = pd.isna(meta[0]) & pd.isna(meta[1]) & pd.isna(meta[2]) & pd.isna(meta[3])
        own_ctx_set = ~pd.isna(own_ctx) & (own_ctx != "")
        skills = _objects(run.cols[_B_SKILLS])[i_tutor].tolist()
        for raw in set(skills) - self._skills.keys():
            self._skills[raw] = _skill_list(raw)
        custom = _objects(run.cols[_B_CUSTOM])[i_tutor].tolist()
        n_t = len(i_tutor)
        env = self.envelope[-1] if self.envelope else (None, None)
        r = self.rows
        r["n"].extend((base + 1 + i_tutor).tolist())
        r["tx"].extend(run.tutor_tx)
        for k, a in zip(("user", "session", "time", "zone"), meta):
            r[k].extend(np.where(nometa, t_cols[k], a).tolist())
        r["problem"].extend(np.where(pd.isna(problem), t_cols["problem"], problem).tolist())
        r["step"].extend(np.where(pd.isna(selection), t_cols["selection"], selection).tolist())
        r["input"].extend(np.where(pd.isna(t_cols["input"]), value, t_cols["input"]).tolist())
        r["outcome"].extend(run.texts(_B_EVAL)[i_tutor].tolist())
        r["hint_number"].extend(run.attr(_B_EVATTRS, _R_HINTNO)[i_tutor].tolist())
        r["ctx"].extend(np.where(own_ctx_set, own_ctx, t_cols["ctx"]).tolist())
        r["skills"].extend([self._skills[raw] for raw in skills])
        r["custom"].extend([_custom_list(raw) if raw else () for raw in custom])
        none = [None] * n_t
        r["kind"].extend(none)
        r["reason"].extend(none)
        r["lp"].extend([env[0]] * n_t)
        r["ls"].extend([env[1]] * n_t)

    # -- streaming ------------------------------------------------------------------
    def feed(self, fh, name: str) -> None:
        """Read messages from a binary file object, one at a time.

        The stream is scanned for message start tags; each message (from its start tag to
        its end tag) is parsed on its own with ``ET.fromstring`` and dropped, so no tree of
        the file is ever built and memory stays flat. ``log_action`` envelopes are followed
        (URL-encoded content is decoded and read the same way).
        """
        src = _Chunks(fh)
        pos = 0
        slow_until, limit = 0, BULK  # runs of plain messages are read in one pass; after one that is not, smaller runs
        while True:
            if pos > CHUNK:  # drop what was read (positions below are only used within one turn)
                src.drop(pos)
                pos, slow_until = 0, max(0, slow_until - pos)
            if pos >= slow_until:
                try:
                    done = self.bulk(src.buf, pos, limit)
                except _NotBulk as exc:
                    slow_until, limit = exc.args[0], max(limit // 16, 1 << 16)
                else:
                    if done > pos:
                        pos, limit = done, min(2 * limit, BULK)
                        continue
            m = _TOKEN.search(src.buf, pos)
            if m is None or (m.group(1) is not None and not m.group(0).endswith(b">")):
                if not src.more():
                    break
                pos = max(pos, len(src.buf) - CHUNK - 256) if m is None else pos
                continue
            tag = m.group(1)
            if tag is None or (tag == b"log_action" and not m.group(0).endswith(b"/>")):
                pos = self._log_action(src, m, name)
                continue
            tag_s = tag.decode()
            if m.group(0).endswith(b"/>"):
                body, end = m.group(0), m.end()
            else:
                close = b"</" + tag + b">"
                k = src.buf.find(close, m.end())
                if k < 0:
                    k = self._read_to_close(src, m, close, name)
                end = k + len(close)
                body = src.buf[m.start():end]
            try:
                self.message_bytes(tag_s, body)
            except (ET.ParseError, UnicodeDecodeError) as exc:
                raise DataError(f"{name}: not well-formed XML in the <{tag_s}> that starts at {src.where(m.start())}: "
                                f"{str(exc).split(':')[0]} (after {self.n_messages:,} messages); fix the file or re-export it") from None
            pos = end

    def _read_to_close(self, src: _Chunks, m: re.Match, close: bytes, name: str) -> int:
        """Where the end tag ``close`` of the element whose start tag ``m`` matched starts in
        ``src.buf``, read on until it is there. The file ending first is a DataError."""
        k = src.buf.find(close, m.end())
        while k < 0:
            if not src.more():
                raise DataError(f"{name}: the file ends inside a <{m.group(1).decode()}> that starts at {src.where(m.start())} "
                                f"(after {self.n_messages:,} messages); the file is truncated or not well-formed")
            k = src.buf.find(close, m.end())
        return k

    def _log_action(self, src: _Chunks, m: re.Match, name: str) -> int:
        """A ``log_action`` start or end tag (``m``): open or close its envelope, or read its URL-encoded
        messages; return the position after what was read."""
        if m.group(1) is None:  # </log_action>
            if self.envelope:
                self.envelope.pop()
            return m.end()
        close = b"</log_action>"
        head = src.buf[m.end():m.end() + 8].lstrip()
        while len(head) < 3 and src.more():
            head = src.buf[m.end():m.end() + 8].lstrip()
        attrs = self._attrs(m.group(0), name, src.where(m.start()))
        envelope = (attrs.get("external_object_id"), attrs.get("session_id"))
        if head[:3].upper() != b"%3C":  # messages inside: read on, envelope open
            self.envelope.append(envelope)
            return m.end()
        k = self._read_to_close(src, m, close, name)
        inner = urllib.parse.unquote(src.buf[m.end():k].decode("utf-8", errors="replace").strip()).encode("utf-8")
        self.envelope.append(envelope)
        self.feed(io.BytesIO(inner), f"{name} ({src.where(m.start())}, URL-encoded log_action)")
        self.envelope.pop()
        return k + len(close)

    @staticmethod
    def _attrs(start_tag: bytes, name: str, at: str) -> dict:
        try:
            return dict(ET.fromstring(start_tag[:-1].rstrip(b"/") + b"/>").attrib)
        except ET.ParseError:
            raise DataError(f"{name}: not well-formed XML in the tag at {at}") from None


def read(path, *, cohort: str, pseudonymiser, options: dict | None = None) -> IngestResult:
    path = Path(path)
    options = check_options(options, OPTIONS, NAME)
    reader = XMLReader(options)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    with _gc_paused(), open(path, "rb") as fh:
        reader.feed(fh, path.name)
        reader.finish()
        return frame_result(reader, source=str(path), cohort=cohort, pseudonymiser=pseudonymiser, options=options)


@contextmanager
def _gc_paused():
    """The cyclic garbage collector off while a file is read: runs make many short-lived tuples
    (no cycles), and every collection would walk the growing columns (at 1M transactions the
    collections took about a third of the read)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _ContextOf:
    """Values of each row's context message (the last one of its id), for the gaps a message leaves."""

    def __init__(self, reader: XMLReader, ctx: pd.Series):
        c = reader.ctx
        ids = pa.array(c["id"], type=pa.string())[::-1]  # newest first: the first occurrence of an id is its last context message
        known = pc.unique(ids)
        last = len(ids) - 1 - pc.index_in(known, value_set=ids).to_numpy(zero_copy_only=False)
        at = pc.index_in(pa.array(ctx.array), value_set=known, skip_nulls=True).fill_null(-1).to_numpy(zero_copy_only=False)
        self.ctx_idx = np.where(at >= 0, np.append(last, -1)[at], -1).astype("int64")  # -1: no context message
        self.hier = np.asarray(c["h"], dtype="int64")
        self.index = ctx.index

    def table(self, values) -> pd.Series:
        """A context message's value per row (index -1: no context message -> NA)."""
        return pd.Series(_strings(_objects(list(values) + [None])[self.ctx_idx]), index=self.index)

    def by_hierarchy(self, values: list) -> pd.Series:
        return self.table(_objects(values)[self.hier] if len(self.hier) else [])

    @staticmethod
    def fill(own: pd.Series, default) -> pd.Series:
        """``own``, its gaps filled from the context message (``default()``; built only when there are gaps)."""
        return own.fillna(default()) if own.isna().any() else own


def _attempt_ids(f: pd.DataFrame, learner: pd.Series, time_text: pd.Series, item: pd.Series, step: pd.Series,
                 skipped: pd.Series, rejected: pd.Series, rcol: pd.Series, rreason: pd.Series) -> pd.Series:
    """Each transaction's id (a content hash where the message has none); a repeated id is a reject
    (``rejected``, ``rcol``, ``rreason`` in place)."""
    attempt_id = f["tx"].copy()
    ok = ~skipped & ~rejected
    need = ok & attempt_id.isna()
    if need.any():
        canon = pd.DataFrame({"l": learner, "t": time_text, "p": item, "s": step, "i": f["input"], "o": f["outcome"], "n": f["n"].astype("string")})
        attempt_id[need] = C.content_ids(canon[need], ["l", "t", "p", "s", "i", "o", "n"], "dx_")
    content = pd.DataFrame({"l": learner, "t": time_text, "p": item, "s": step, "i": f["input"], "o": f["outcome"]})
    dup, dup_reason = C.duplicate_rejects(attempt_id[ok], content[ok], ["l", "t", "p", "s", "i", "o"], f["n"][ok])
    dup_idx = dup[dup].index
    rejected[dup_idx] = True
    rcol[dup_idx] = "semantic_event/@transaction_id"
    rreason[dup_idx] = ("message " + f["n"][dup_idx].astype("string") + ": " + dup_reason[dup_idx].str.replace("line", "message"))
    return attempt_id


def _kcs_and_custom_fields(r: dict, okn: np.ndarray, attempt_id: pd.Series, cohort: str) -> tuple[pd.DataFrame, list]:
    """attempt_kcs rows of the kept transactions (``okn``), and their custom fields as (attempt_id, name, value)."""
    ids = attempt_id.to_numpy(dtype=object, na_value=None)[okn]
    per_row = [r["skills"][j] for j in okn.tolist()]
    pairs = list(chain.from_iterable(per_row))
    kc_ids = np.repeat(ids, np.fromiter(map(len, per_row), dtype="int64", count=len(per_row))).tolist()
    kc_models, kc_names = (list(x) for x in zip(*pairs)) if pairs else ([], [])
    cf_rows = [(ids[k], name, v) for k, j in enumerate(okn.tolist()) if r["custom"][j] for name, v in r["custom"][j]]
    kcs = pd.DataFrame({"cohort": cohort, "attempt_id": _strings(kc_ids), "kc_model": _strings(kc_models),
                        "kc": _strings(kc_names)}).drop_duplicates()
    return kcs, cf_rows


def frame_result(reader: XMLReader, *, source: str, cohort: str, pseudonymiser, options: dict) -> IngestResult:
    name = Path(source).name
    r = reader.rows
    n = len(r["n"])
    cols = ("tx", "user", "session", "time", "zone", "problem", "step", "input", "outcome", "ctx", "kind", "reason", "lp", "ls")
    f = pd.DataFrame({"n": r["n"], **{k: _strings(r[k]) for k in cols}})
    cx = _ContextOf(reader, f["ctx"])  # context defaults: problem, levels, meta (the last context message of an id counts)
    fill, by_hierarchy = cx.fill, cx.by_hierarchy

    def from_ctx(j: int, k: int):
        return lambda: cx.table(reader.ctx[("user", "session", "time", "zone")[j]])
    user = fill(f["user"], from_ctx(0, 1))
    if options.get("user_id") is not None:
        user = user.fillna(str(options["user_id"]))
    learner = pseudonymiser.series(user)
    f = f.drop(columns="user")
    session = pseudonymiser.sessions(C.blank_to_na(fill(f["session"], from_ctx(1, 1)).fillna(f["ls"])))
    time_text = fill(f["time"], from_ctx(2, 1))
    if options.get("time") is not None:
        time_text = time_text.fillna(str(options["time"]))
    zones = fill(f["zone"], from_ctx(3, 1))
    local = C.parse_timestamps(time_text)
    ts, bad_zone = C.localize_to_utc(local, zones, options.get("default_time_zone", "UTC"))
    item = fill(f["problem"], lambda: by_hierarchy([x[1] for x in reader.hierarchies])).fillna(f["lp"])
    step = f["step"].fillna(item)
    outcome_key = f["outcome"].str.upper()
    outcome = outcome_key.map(OUTCOMES).astype("string")
    skipped = f["kind"].eq("skipped").fillna(False) | (f["kind"].isna() & (outcome_key.isna() | outcome_key.eq("UNGRADED")).fillna(False))
    known = ", ".join(sorted(OUTCOMES)) + " (and blank or UNGRADED for events that are not attempts)"
    def loc(m: pd.Series) -> pd.Series:
        """'message N' for the rows of ``m`` (built only for rows that need a reason)."""
        return "message " + f["n"][m].astype("string")
    conditions = [
        (learner.isna(), "meta/user_id", lambda m: loc(m) + ": no meta/user_id on the message or its context message; give the learner with option user_id"),
        (outcome.isna(), "action_evaluation", lambda m: loc(m) + ": unknown action_evaluation " + C.quoted(f["outcome"][m]) + "; known values: " + known),
        (item.isna(), "problem_name", lambda m: loc(m) + ": no problem_name and no problem in its context message"),
        (time_text.isna(), "meta/time", lambda m: loc(m) + ": no meta/time on the message or its context message; give it with option time"),
        (local.isna(), "meta/time", lambda m: loc(m) + ": cannot parse time " + C.quoted(time_text[m]) + "; expected e.g. 2024-07-10 07:42:34"),
        (bad_zone, "meta/time_zone", lambda m: loc(m) + ": unknown time zone " + C.quoted(zones[m]) + "; use an IANA name such as US/Eastern, or UTC"),
    ]
    rejected, rcol, rreason = C.first_reason([(~skipped & c, col, why) for c, col, why in conditions], f.index)
    attempt_id = _attempt_ids(f, learner, time_text, item, step, skipped, rejected, rcol, rreason)
    ok = ~skipped & ~rejected

    rejects = C.RejectCollector(name)
    raw = pd.DataFrame({"learner_id": learner, "transaction_id": f["tx"], "problem": item, "selection": step, "action_evaluation": f["outcome"],
                        "time": time_text})
    if skipped.any():
        why = f["reason"].fillna("not an attempt: action_evaluation is " + f["outcome"].fillna("blank"))
        rejects.add(raw[skipped], line=f["n"][skipped], column="action_evaluation", reason=loc(skipped) + ": " + why[skipped], kind="skipped")
    if rejected.any():
        rejects.add(raw[rejected], line=f["n"][rejected], column=rcol[rejected], reason=rreason[rejected])

    page = by_hierarchy([x[0][-1][1] if len(x[0]) >= 1 else None for x in reader.hierarchies])
    module = by_hierarchy([x[0][-2][1] if len(x[0]) >= 2 else None for x in reader.hierarchies])
    att = pd.DataFrame({
        "cohort": cohort, "attempt_id": attempt_id, "learner_id": learner, "course_version": options.get("course_version"),
        "session_id": session, "module": C.blank_to_na(module), "page": C.blank_to_na(page), "item_id": item, "step_id": step,
        "problem_view": pd.array([pd.NA] * n, dtype="Int64"), "attempt": pd.array([pd.NA] * n, dtype="Int64"),
        "outcome": outcome, "response": f["input"], "timestamp": ts, "duration_s": np.nan,
        "source_file": name, "source_line": f["n"].astype("int64"),
    })[ok]
    if len(att):
        order = att.sort_values(["timestamp", "source_line"], kind="stable")
        counted = order.groupby([order["learner_id"], order["item_id"], order["step_id"]], sort=False, dropna=False).cumcount() + 1
        att["attempt"] = counted.reindex(att.index).astype("Int64")
    kcs, cf_rows = _kcs_and_custom_fields(r, np.flatnonzero(ok.to_numpy()), attempt_id, cohort)
    res = IngestResult(source_file=source, format=NAME, n_read=n,
                       tables={"attempts": C.conform(att, "attempts"), "attempt_kcs": C.conform(kcs, "attempt_kcs")},
                       rejects=rejects.frame())
    res.custom_fields = pd.DataFrame(cf_rows, columns=["attempt_id", "name", "value"])
    res.counts = {"messages": reader.n_messages, "context_messages": reader.n_context, "transactions": int(ok.sum())}
    res.notes = [f"  DataShop XML: {reader.n_messages:,} messages ({reader.n_context:,} context messages), "
                 f"{int(ok.sum()):,} transactions, {len(res.custom_fields):,} custom field values"]
    return res


CUSTOM_SQL = """CREATE TABLE IF NOT EXISTS custom_fields (
    cohort VARCHAR, attempt_id VARCHAR, name VARCHAR, value VARCHAR)"""


def store_custom_fields(con, result, *, cohort: str) -> int:
    """Insert the custom fields of loaded transactions into ``custom_fields`` (idempotent)."""
    cf = getattr(result, "custom_fields", None)
    if cf is None or cf.empty:
        return 0
    con.execute(CUSTOM_SQL).fetchall()
    con.register("__cf", cf.assign(cohort=cohort)[["cohort", "attempt_id", "name", "value"]])
    n = con.execute("""INSERT INTO custom_fields SELECT c.* FROM __cf c
        WHERE EXISTS (SELECT 1 FROM attempts a WHERE a.cohort = c.cohort AND a.attempt_id = c.attempt_id)
          AND NOT EXISTS (SELECT 1 FROM custom_fields x WHERE x.cohort = c.cohort AND x.attempt_id = c.attempt_id AND x.name = c.name)""").fetchall()[0][0]
    con.unregister("__cf")
    return int(n)
