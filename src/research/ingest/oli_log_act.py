"""OLI's legacy ``log_act`` table dump (tab-separated) -> attempts + attempt_kcs.

Each row with ``info_type`` = ``tutor_message.dtd`` holds one DataShop tutor-message
sequence in ``info`` (newlines and tabs written as backslash escapes by the database
dump); it is read by :mod:`research.ingest.datashop_xml`. The learner comes from the row's
``sess_ref`` through the session map (``user_sess`` -> ``user_id``, option
``session_map``; by default a ``*user_sess_map*.txt`` beside the file), the time from the
row's ``time`` + ``timezone`` where the messages have no ``meta``. The other rows (page
views, assessment and media events) are skipped with their ``info_type`` and ``action``.

``source_line`` is the row's line in the file for skipped rows and the message number for
transactions (as in ``datashop-xml``); ``n_read`` = transactions + rows skipped.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from research.errors import DataError
from research.ingest import _common as C
from research.ingest import datashop_xml as X
from research.ingest.datashop_tx import check_options

__all__ = ["NAME", "OPTIONS", "read", "sniff"]

NAME = "oli-log-act"
OPTIONS = {"session_map", "default_time_zone", "course_version"}
HEADER = ["guid", "sess_ref", "source", "time", "timezone", "action", "external_object_id", "container", "concept_this",
          "concept_req", "eastern_time", "server_receipt_time", "info_type", "info"]


def sniff(path: Path, head: str) -> bool:
    return head.split("\n", 1)[0].rstrip("\r").split("\t") == HEADER


def _session_map(path: Path, options: dict) -> dict:
    spec = options.get("session_map")
    if spec is None:
        found = sorted(path.parent.glob("*user_sess_map*.txt"))
        if not found:
            raise DataError(f"{path.name}: the learners of an OLI log_act dump come from a session map (user_sess -> user_id); "
                            "give it with options={'session_map': 'PATH'} or put *user_sess_map*.txt beside the file")
        spec = found[0]
    mp = Path(spec)
    with open(mp, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    if not rows or rows[0][:2] != ["user_sess", "user_id"]:
        raise DataError(f"{mp.name}: a session map needs the header user_sess<TAB>user_id")
    return {r[0]: r[1] for r in rows[1:] if len(r) >= 2}


def read(path, *, cohort: str, pseudonymiser, options: dict | None = None):
    path = Path(path)
    options = check_options(options, OPTIONS, NAME)
    sessions = _session_map(path, options)
    reader = X.XMLReader(options)
    skipped = []
    with open(path, encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header != HEADER:
            raise DataError(f"{path.name}: expected the log_act header {' '.join(HEADER)}")
        for number, row in enumerate(rows, start=2):
            if len(row) != len(HEADER):
                skipped.append((number, "$", f"line {number}: {len(row)} fields, expected {len(HEADER)}", "rejected", {}))
                continue
            rec = dict(zip(HEADER, row))
            if rec["info_type"] != "tutor_message.dtd":
                skipped.append((number, "info_type", f"line {number}: not a tutor message (info_type {rec['info_type']!r}, action {rec['action']!r})",
                                "skipped", {"info_type": rec["info_type"], "action": rec["action"], "source": rec["source"]}))
                continue
            xml = rec["info"].replace("\\\\n", "\n").replace("\\\\t", "\t").replace("\\n", "\n").replace("\\t", "\t").replace('\\"', '"')
            start = len(reader.rows["n"])
            reader.feed(io.BytesIO(xml.encode("utf-8")), f"{path.name} line {number}")
            user = sessions.get(rec["sess_ref"])
            r = reader.rows
            for j in range(start, len(r["n"])):
                if r["user"][j] is None:
                    r["user"][j] = user
                if r["time"][j] is None:
                    r["time"][j], r["zone"][j] = rec["time"], rec["timezone"]
                if r["session"][j] is None:
                    r["session"][j] = rec["sess_ref"]
        # tool messages of one row are evaluated in a later row: pair across the whole file
    reader.finish()
    res = X.frame_result(reader, source=str(path), cohort=cohort, pseudonymiser=pseudonymiser, options=options)
    res.format = NAME
    if skipped:
        extra = C.RejectCollector(path.name)
        for kind in ("skipped", "rejected"):
            part = [s for s in skipped if s[3] == kind]
            if part:
                extra.add(pd.DataFrame([s[4] for s in part]), line=pd.Series([s[0] for s in part]), column=pd.Series([s[1] for s in part]),
                          reason=pd.Series([s[2] for s in part]), kind=kind)
        res.rejects = pd.concat([res.rejects, extra.frame()], ignore_index=True)
    res.n_read += len(skipped)
    res.counts["rows_not_tutor_messages"] = sum(1 for s in skipped if s[3] == "skipped")
    return res
