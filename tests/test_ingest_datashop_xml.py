"""DataShop tutor-message XML (Torus's DataShop export, OLI legacy logs) and OLI's log_act dump.

Fixtures are read in place from ../shared/data/datashop_xml; the expected results are those
its README gives per file.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pandas as pd
import pytest

from research.errors import DataError
from research.ingest import read_file, sniff
from research.pseudonym import Pseudonymiser
from research.warehouse import Warehouse

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "datashop_xml"
KC_1299 = "Understand the different types of cognitive processing and recognize how each type contributes to effective learning."

pytestmark = pytest.mark.realdata


def need(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("RESEARCH_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"{path} is missing and RESEARCH_REQUIRE_REAL_DATA=1")
        pytest.skip(f"{path} not present (public fixture read in place from ../shared/data)")
    return path


@pytest.fixture(scope="module")
def ps():
    return Pseudonymiser(key=b"k-xml")


def read(path, ps, **options):
    res = read_file(need(path), cohort="x", pseudonymiser=ps, options=options or None)
    assert res.n_read == len(res.tables["attempts"]) + len(res.rejects)
    return res


def test_torus_export_1299_matches_the_xapi_statement(ps):
    p = DATA / "oli_torus_dataset_export" / "1299.xml"
    assert sniff(need(p)) == "datashop-xml"
    res = read(p, ps)
    att = res.tables["attempts"]
    assert list(att["outcome"]) == ["hint", "incorrect"] and list(att["attempt"]) == [1, 2]
    assert set(att["item_id"]) == {"Activity 151805, Part 1"} and set(att["step_id"]) == {"Activity 151805, Part 1"}
    assert att["response"].iloc[1] == "Managing Essential Processing"
    assert (att["page"].iloc[0], att["module"].iloc[0]) == ("Multimedia to Support Cognitive Processing", "Mayer's Multimedia Principle")
    assert str(att["timestamp"].iloc[0]) == "2024-07-10 07:42:34" and att["session_id"].iloc[0] == ps.sessions(pd.Series(["2024-07-10-29252"])).iloc[0]
    assert att["learner_id"].iloc[0] == ps.one("29252")
    kcs = res.tables["attempt_kcs"]
    assert len(kcs) == 2 and set(kcs["kc"]) == {KC_1299} and set(kcs["kc_model"]) == {"Default"}
    # the same part attempt through the xAPI torus profile: same item, outcomes and learner
    xapi = read_file(need(DATA.parent / "xapi_platform_statements" / "oli_torus" / "evaluated.json"), cohort="x", pseudonymiser=ps).tables["attempts"]
    cols = ["learner_id", "item_id", "outcome", "attempt", "timestamp"]
    assert xapi[cols].reset_index(drop=True).equals(att[cols].reset_index(drop=True))


def test_legacy_log_templates(ps):
    nested = DATA / "oli_torus_legacy_logs" / "legacy_logs_test_complex_nested_sequence.xml"
    res = read(nested, ps)  # no meta: no learner, no time -> a clear reject, not a traceback
    assert res.tables["attempts"].empty and "give the learner with option user_id" in res.rejects["reason"].iloc[0]
    res = read(nested, ps, user_id="u-1", time="2025-09-30 02:30:58")
    att = res.tables["attempts"]
    assert (att["item_id"].iloc[0], att["step_id"].iloc[0], att["outcome"].iloc[0], att["response"].iloc[0]) == ("Test Problem", "P1", "correct", "Complex input data")
    assert (att["page"].iloc[0], att["module"].iloc[0]) == ("Test Page", "Test Course")
    encoded = DATA / "oli_torus_legacy_logs" / "legacy_logs_test_real_world_url_encoded.xml"
    res = read(encoded, ps, user_id="u-1")  # time comes from... nothing: rejected with the reason
    assert res.tables["attempts"].empty and "meta/time" in res.rejects["column"].iloc[0]
    res = read(encoded, ps, user_id="u-1", time="2025-09-30 02:30:58")
    att = res.tables["attempts"]
    assert (att["step_id"].iloc[0], att["outcome"].iloc[0], att["response"].iloc[0]) == ("P3", "incorrect", "Both of these two types of mutations")
    assert res.custom_fields.set_index("name")["value"].to_dict() == {"step_id": "4", "tutor_input": "Both of these two types of mutations",
                                                                       "tutor_event_time": "2025-09-30 02:30:58.380 UTC"}


def test_oli_log_act_dump(ps):
    p = DATA / "learnsphere_oli_log_act" / "stats_log_act.txt"
    assert sniff(need(p)) == "oli-log-act"
    res = read(p, ps)
    att = res.tables["attempts"]
    # README: 670 RESULT (474 CORRECT, 196 INCORRECT) + 8 HINT_MSG; 5 sessions = 5 users; 1 problem; 6 context messages
    assert att["outcome"].value_counts().to_dict() == {"correct": 474, "incorrect": 196, "hint": 8}
    assert att["learner_id"].nunique() == 5 and set(att["item_id"]) == {"extra_credit"}
    assert res.counts["context_messages"] == 6 and res.counts["messages"] == 1437 and res.counts["rows_not_tutor_messages"] == 1394
    assert (res.rejects["kind"] == "skipped").all()
    assert "Coleman-Seiffert" not in res.rejects["raw"].str.cat(sep=" ")


def test_custom_fields_and_kc_models_reach_the_warehouse(tmp_path, ps):
    p = tmp_path / "two_models.xml"
    msg = ('<tool_message context_message_id="c1"><meta><user_id>stu.secret</user_id><session_id>s1</session_id><time>2024-01-02 10:00:0{i}</time>'
           '<time_zone>US/Eastern</time_zone></meta><problem_name>P</problem_name><semantic_event transaction_id="t{i}" name="ATTEMPT"/>'
           '<event_descriptor><selection>s{i}</selection><action>a</action><input>x{i}</input></event_descriptor></tool_message>'
           '<tutor_message context_message_id="c1"><meta><user_id>stu.secret</user_id><session_id>s1</session_id><time>2024-01-02 10:00:0{i}</time>'
           '<time_zone>US/Eastern</time_zone></meta><problem_name>P</problem_name><semantic_event transaction_id="t{i}" name="RESULT"/>'
           '<event_descriptor><selection>s{i}</selection><action>a</action><input>x{i}</input></event_descriptor>'
           '<action_evaluation>{o}</action_evaluation><skill><name>k{i}</name><model_name>Model A</model_name></skill>'
           '<skill><name>j{i}</name><model_name>Model B</model_name></skill><custom_field><name>cf</name><value>v{i}</value></custom_field></tutor_message>')
    body = "".join(msg.format(i=i, o=o) for i, o in enumerate(["CORRECT", "INCORRECT", "BOGUS"]))
    p.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<tutor_related_message_sequence version_number="4">' + body + "</tutor_related_message_sequence>", encoding="utf-8")
    with Warehouse(tmp_path / "w.duckdb") as wh:
        summary = wh.ingest([p], cohort="c", pseudonymiser=ps)
        att = wh.table("attempts", "c")
        assert list(att["outcome"]) == ["correct", "incorrect"] and str(att["timestamp"].iloc[0]) == "2024-01-02 15:00:00"
        kcs = wh.table("attempt_kcs", "c")
        assert sorted(zip(kcs["kc_model"], kcs["kc"])) == [("Model A", "k0"), ("Model A", "k1"), ("Model B", "j0"), ("Model B", "j1")]
        assert sorted(wh.con.execute("SELECT value FROM custom_fields").fetchall()) == [("v0",), ("v1",)]
        q = wh.table("quarantine", "c")
        assert "unknown action_evaluation 'BOGUS'" in q["reason"].iloc[0] and q["column"].iloc[0] == "action_evaluation"
        wh.ingest([p], cohort="c", pseudonymiser=ps)
        assert len(wh.table("attempts", "c")) == 2
    assert "stu.secret" not in str(summary) + q.to_csv() + (tmp_path / "w.duckdb").read_bytes().decode("latin-1")


def test_broken_xml_is_a_clear_error(tmp_path, ps):
    p = tmp_path / "broken.xml"
    p.write_text("<tutor_related_message_sequence><tutor_message><meta></tutor_message>", encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.xml: not well-formed XML in the <tutor_message> that starts at line 1: mismatched tag"):
        read_file(p, cohort="x", pseudonymiser=ps, format="datashop-xml")
    good = (DATA / "oli_torus_dataset_export" / "1299.xml")
    p.write_bytes(need(good).read_bytes()[:-200])  # truncated in the last message
    with pytest.raises(DataError, match=r"broken.xml: the file ends inside a <tutor_message> that starts at line 5 \(after 4 messages\)"):
        read_file(p, cohort="x", pseudonymiser=ps, format="datashop-xml")


def test_streaming_memory_is_bounded(tmp_path, ps):
    """2,000 transactions whose tutor messages carry 20 KB of advice each (40 MB): the reader
    streams, so its peak memory is a small fraction of the file (a DOM would hold it all)."""
    advice = "Anything extra causes unnecessary mental strain. " * 400
    msg = ('<tool_message context_message_id="c"><meta><user_id>u{u}</user_id><time>2024-01-02 10:{m:02d}:00</time></meta>'
           '<problem_name>P{p}</problem_name><semantic_event transaction_id="t{i}" name="ATTEMPT"/><event_descriptor><selection>s</selection>'
           '<input>x</input></event_descriptor></tool_message>\n<tutor_message context_message_id="c"><meta><user_id>u{u}</user_id>'
           '<time>2024-01-02 10:{m:02d}:00</time></meta><problem_name>P{p}</problem_name><semantic_event transaction_id="t{i}" name="RESULT"/>'
           '<event_descriptor><selection>s</selection><input>x</input></event_descriptor><action_evaluation>CORRECT</action_evaluation>'
           '<tutor_advice>{a}</tutor_advice></tutor_message>\n')
    p = tmp_path / "big.xml"
    with open(p, "w", encoding="utf-8") as fh:
        for i in range(2000):
            fh.write(msg.format(i=i, u=i % 37, p=i % 11, m=i % 60, a=advice))
    tracemalloc.start()
    res = read_file(p, cohort="x", pseudonymiser=ps, format="datashop-xml")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(res.tables["attempts"]) == 2000
    size = p.stat().st_size
    assert peak < 0.2 * size, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"


def test_xml_xapi_and_tab_delimited_give_the_same_attempts(tmp_path, ps):
    from research.simulate.platforms import write_datashop_tab, write_torus_xapi, write_xml

    cols = ["attempt_id", "learner_id", "session_id", "module", "page", "item_id", "step_id", "attempt", "outcome", "response", "timestamp"]
    got = {}
    for name, writer in (("xml", write_xml), ("tab", write_datashop_tab), ("xapi", write_torus_xapi)):
        res = read_file(writer(tmp_path / f"run.{name}", 3000, seed=4), cohort="x", pseudonymiser=ps,
                        format={"xml": "datashop-xml", "tab": "datashop", "xapi": "xapi"}[name])
        assert res.rejects.empty
        got[name] = res
    a = {k: r.tables["attempts"].sort_values("attempt_id").reset_index(drop=True) for k, r in got.items()}
    assert len(a["xml"]) == 3000 and a["xml"][cols].equals(a["tab"][cols])
    assert a["xml"][["attempt_id", "learner_id", "item_id", "attempt", "outcome", "timestamp"]].equals(
        a["xapi"][["attempt_id", "learner_id", "item_id", "attempt", "outcome", "timestamp"]])
    kx = got["xml"].tables["attempt_kcs"].sort_values("attempt_id").reset_index(drop=True)
    kt = got["tab"].tables["attempt_kcs"].sort_values("attempt_id").reset_index(drop=True)
    assert kx[["attempt_id", "kc_model", "kc"]].equals(kt[["attempt_id", "kc_model", "kc"]])


# -- the one-pass reader (runs of plain messages) against the message-by-message reader ---------------

def _read_xml(path, ps, *, one_pass: bool, monkeypatch, chunk: int | None = None, **options):
    """Read ``path``; ``one_pass=False`` turns the one-pass reader off. Returns (result, messages it read)."""
    from research.ingest import datashop_xml as X

    seen = {"n": 0}
    bulk = X.XMLReader.bulk

    def counted(self, buf, pos, limit):
        if not one_pass:
            return pos
        before = self.n_messages
        out = bulk(self, buf, pos, limit)
        seen["n"] += self.n_messages - before
        return out
    with monkeypatch.context() as m:
        m.setattr(X.XMLReader, "bulk", counted)
        if chunk:
            m.setattr(X, "CHUNK", chunk)
            m.setattr(X, "BULK", 4 * chunk)
        res = read_file(path, cohort="x", pseudonymiser=ps, format="datashop-xml", options=options or None)
    return res, seen["n"]


def _same_result(a, b):
    for t in ("attempts", "attempt_kcs"):
        pd.testing.assert_frame_equal(a.tables[t].reset_index(drop=True), b.tables[t].reset_index(drop=True))
    pd.testing.assert_frame_equal(a.rejects.reset_index(drop=True), b.rejects.reset_index(drop=True))
    pd.testing.assert_frame_equal(a.custom_fields.reset_index(drop=True), b.custom_fields.reset_index(drop=True))
    assert (a.counts, a.n_read, a.notes) == (b.counts, b.n_read, b.notes)


def _pair(i, *, ctx="c1", tool_first=True, tutor_meta=True, order="tx-first", user="u1", value="x", evaluation="CORRECT", extra=""):
    sem = {"tx-first": f'<semantic_event transaction_id="t{i}" name="{{n}}"/>',
           "name-first": f'<semantic_event name="{{n}}" transaction_id="t{i}" />',
           "open-close": f'<semantic_event foo="1" transaction_id="t{i}" name="{{n}}"></semantic_event>'}[order]
    meta = f"<meta><user_id>{user}</user_id><session_id>s1</session_id><time>2024-01-02 10:{i % 60:02d}:00</time><time_zone>UTC</time_zone></meta>"
    tool = (f'<tool_message context_message_id="{ctx}">{meta}<problem_name>P</problem_name>{sem.format(n="ATTEMPT")}'
            f"<event_descriptor><selection>s{i % 3}</selection><action>a</action><input>{value}</input></event_descriptor></tool_message>\n")
    lead = "" if order == "tx-first" else 'kind="r" '  # context_message_id not the first attribute
    tutor = (f'<tutor_message {lead}context_message_id="{ctx}">{meta if tutor_meta else ""}'
             f"{sem.format(n='RESULT')}<event_descriptor><selection>s{i % 3}</selection><input>tutor says {value}</input></event_descriptor>"
             f'<action_evaluation current_hint_number="{i % 2}">{evaluation}</action_evaluation>'
             f"<skill><name>k{i % 4}</name><model_name>M</model_name></skill><skill><name>j</name></skill>{extra}</tutor_message>\n")
    return tool + tutor if tool_first else tutor + tool


_CONTEXT = ('<context_message context_message_id="c1" name="START_PROBLEM"><meta><user_id>u1</user_id><time>2024-01-02 09:00:00</time></meta>'
            '<dataset><name>d</name><level type="Unit"><name>Unit 1</name><level type="Page"><name>Page 1</name>'
            '<problem><name>P</name></problem></level></level></dataset></context_message>\n')


def _document(path, body: str):
    path.write_text('<?xml version="1.0" encoding="UTF-8"?>\n<tutor_related_message_sequence version_number="4">\n' + _CONTEXT + body
                    + "</tutor_related_message_sequence>\n", encoding="utf-8")
    return path


def test_one_pass_reader_gives_what_the_element_reader_gives(tmp_path, ps, monkeypatch):
    """Attributes in any order, tutor messages without meta (the tool message's count), the tool
    message's input before the tutor's, hint numbers, KC models, custom fields, apostrophes and
    padded values: read in one pass, and the same as message by message."""
    body = "".join(_pair(i, order=("tx-first", "name-first", "open-close")[i % 3], tutor_meta=i % 4 != 0,
                         user=" u1 " if i == 7 else f"u{i % 5}", value="it's" if i % 5 == 0 else f"v{i}",
                         extra="<custom_field><name>cf</name><value> w </value></custom_field>" if i % 6 == 0 else "") for i in range(300))
    p = _document(tmp_path / "plain.xml", body + '<tool_message context_message_id="c1"><semantic_event transaction_id="lonely" name="ATTEMPT"/></tool_message>\n')
    fast, n_fast = _read_xml(p, ps, one_pass=True, monkeypatch=monkeypatch)
    slow, n_slow = _read_xml(p, ps, one_pass=False, monkeypatch=monkeypatch)
    assert n_fast == 602 and n_slow == 0  # every message in one pass (the run ends at the last complete message)
    _same_result(fast, slow)
    att = fast.tables["attempts"].set_index("attempt_id")
    assert len(att) == 300 and att.loc["t0", "response"] == "it's" and att.loc["t1", "response"] == "v1"  # the tool message's input
    assert att.loc["t4", "learner_id"] == ps.one("u4") and att.loc["t7", "learner_id"] == ps.one("u1")  # meta from the tool message; stripped
    assert (att.loc["t0", "page"], att.loc["t0", "module"]) == ("Page 1", "Unit 1")
    assert fast.custom_fields.iloc[0].tolist() == ["t0", "cf", "w"] and len(fast.custom_fields) == 50
    kcs = fast.tables["attempt_kcs"]
    assert sorted(kcs.loc[kcs["attempt_id"] == "t5", "kc"]) == ["j", "k1"] and set(kcs["kc_model"]) == {"M", "Default"}
    assert "lonely" in fast.rejects["reason"].str.cat()


def test_messages_split_across_chunks_and_runs(tmp_path, ps, monkeypatch):
    """Small chunks: messages, and tool/tutor pairs, straddle chunk and run boundaries; odd
    messages (CDATA, entities, single-quoted attributes, tutor before tool) in between send
    their runs to the message-by-message reader. Same result as reading all at once."""
    odd = ['<tutor_message context_message_id="c1"><meta><user_id>u9</user_id><time>2024-01-02 11:00:00</time></meta><semantic_event transaction_id="cd" name="RESULT"/>'
           "<event_descriptor><selection>s</selection><input><![CDATA[a < b]]></input></event_descriptor><action_evaluation>CORRECT</action_evaluation></tutor_message>\n",
           '<tutor_message context_message_id="c1"><meta><user_id>u9</user_id><time>2024-01-02 11:00:01</time></meta><semantic_event transaction_id="en" name="RESULT"/>'
           "<event_descriptor><selection>s</selection><input>a &amp; b</input></event_descriptor><action_evaluation>INCORRECT</action_evaluation></tutor_message>\n",
           "<tutor_message context_message_id='c1'><meta><user_id>u9</user_id><time>2024-01-02 11:00:02</time></meta><semantic_event transaction_id='sq' name='RESULT'/>"
           "<event_descriptor><selection>s</selection><input>q</input></event_descriptor><action_evaluation>CORRECT</action_evaluation></tutor_message>\n"]
    parts = []
    for i in range(400):
        parts.append(_pair(i, tool_first=i % 97 != 5, tutor_meta=i % 3 != 0))
        if i % 50 == 25:
            parts.append(odd[(i // 50) % 3])
    p = _document(tmp_path / "split.xml", "".join(parts))
    whole, _ = _read_xml(p, ps, one_pass=True, monkeypatch=monkeypatch)
    slow, _ = _read_xml(p, ps, one_pass=False, monkeypatch=monkeypatch, chunk=1024)
    small, n_small = _read_xml(p, ps, one_pass=True, monkeypatch=monkeypatch, chunk=1024)
    assert 0 < n_small < 800  # partly in one pass, partly message by message
    _same_result(small, slow)
    _same_result(whole, slow)
    att = small.tables["attempts"].set_index("attempt_id")
    assert att.loc["cd", "response"] == "a < b" and att.loc["en", "response"] == "a & b" and att.loc["sq", "page"] == "Page 1"
    assert small.rejects["reason"].str.contains("has no tutor evaluation").sum() == 5  # tool messages after their tutor message
