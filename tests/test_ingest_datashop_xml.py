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
