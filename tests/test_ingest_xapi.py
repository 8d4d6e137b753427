"""xAPI adapter: statements written here by hand, following the xAPI 1.0.3 statement format."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from research.errors import ConfigError, DataError
from research.ingest import read_file, sniff
from research.pseudonym import Pseudonymiser

KC = "https://w3id.org/xapi/course-research/kc/"
ADL = "http://adlnet.gov/expapi/verbs/"
COURSE = "https://lms.example.org/course/dig101"


def stmt(i, *, verb="answered", success=True, name="anna.secret@example.org", obj="q1", ts="2024-03-01T10:00:00Z",
         kc=None, extra_ctx=None, result=None, sid=True, actor=None):
    s = {
        "actor": actor if actor is not None else {"objectType": "Agent", "account": {"homePage": "https://lms.example.org", "name": name}},
        "verb": {"id": ADL + verb, "display": {"en-US": verb}},
        "object": {"id": f"{COURSE}/items/{obj}", "objectType": "Activity"},
        "timestamp": ts,
        "context": {
            "contextActivities": {"parent": [{"id": f"{COURSE}/pages/page-2"}], "grouping": [{"id": f"{COURSE}/modules/module-1"}]},
            "extensions": {**({KC + "Default": kc} if kc is not None else {}), **(extra_ctx or {})},
        },
    }
    if sid:
        s["id"] = f"00000000-0000-4000-8000-{i:012d}"
    if result is not None:
        s["result"] = result
    elif verb in ("answered", "attempted") and success is not None:
        s["result"] = {"success": success, "response": "B", "duration": "PT1M30.5S"}
    return s


STATEMENTS = [
    stmt(1, success=False, kc="fractions", ts="2024-03-01T10:00:00Z"),
    stmt(2, verb="asked", ts="2024-03-01T10:00:10Z", kc="fractions"),
    stmt(3, success=True, kc=["fractions", "decimals"], ts="2024-03-01T11:00:20+01:00"),  # 10:00:20 UTC
    stmt(4, verb="completed", ts="2024-03-01T10:01:00Z"),
    stmt(5, success=True, obj="q2", name="bo.secret", ts="2024-03-01T09:00:00Z", kc="decimals~~percent"),
]


@pytest.fixture
def ps():
    return Pseudonymiser(key=b"k-xapi")


def write(tmp_path, statements, how="array", name="lrs.json"):
    p = tmp_path / name
    if how == "array":
        p.write_text(json.dumps(statements, indent=2), encoding="utf-8")
    elif how == "wrapper":
        p.write_text(json.dumps({"statements": statements, "more": ""}), encoding="utf-8")
    else:
        p.write_text("\n".join(s if isinstance(s, str) else json.dumps(s) for s in statements) + "\n", encoding="utf-8")
    return p


def ingest(p, ps, **kw):
    res = read_file(p, cohort="x", pseudonymiser=ps, **kw)
    assert res.n_read == len(res.tables["attempts"]) + len(res.rejects)
    everything = res.rejects["raw"].str.cat(sep=" ") + res.tables["attempts"].to_csv() + res.tables["attempt_kcs"].to_csv()
    assert "secret" not in everything, "raw learner id leaked"
    return res


@pytest.mark.parametrize("how", ["array", "wrapper", "lines"])
def test_three_layouts_same_result(tmp_path, ps, how):
    p = write(tmp_path, STATEMENTS, how, name="lrs.jsonl" if how == "lines" else "lrs.json")
    assert sniff(p) == "xapi"
    res = ingest(p, ps)
    att = res.tables["attempts"]
    assert list(att["outcome"]) == ["incorrect", "hint", "correct", "correct"]
    assert list(att["item_id"]) == ["q1", "q1", "q1", "q2"]
    assert list(att["attempt"]) == [1, 2, 3, 1]
    assert att.loc[2, "timestamp"] == pd.Timestamp("2024-03-01 10:00:20")
    assert att.loc[0, "duration_s"] == 90.5 and att.loc[0, "response"] == "B"
    assert (att["page"] == "page-2").all() and (att["module"] == "module-1").all()
    assert att["attempt_id"].iloc[0] == "00000000-0000-4000-8000-000000000001"
    assert att["learner_id"].nunique() == 2 and att["learner_id"].str.fullmatch(r"p_[0-9a-f]{16}").all()
    skipped = res.rejects
    assert list(skipped["kind"]) == ["skipped"] and "verb 'completed' is not an attempt" in skipped.iloc[0]["reason"]
    assert skipped.iloc[0]["source_line"] == 4
    kcs = res.tables["attempt_kcs"]
    assert set(kcs["kc_model"]) == {"Default"}
    by = kcs.groupby("attempt_id")["kc"].apply(sorted).to_dict()
    assert by["00000000-0000-4000-8000-000000000003"] == ["decimals", "fractions"]
    assert by["00000000-0000-4000-8000-000000000005"] == ["decimals", "percent"]


def test_actor_forms_and_missing_actor(tmp_path, ps):
    sts = [
        stmt(1, actor={"mbox": "mailto:carl.secret@example.org"}),
        stmt(2, actor={"mbox_sha1sum": "ab12secret"}),
        stmt(3, actor={"openid": "https://id.example.org/secret"}),
        stmt(4, actor={"objectType": "Agent", "name": "no id secret"}),
    ]
    res = ingest(write(tmp_path, sts), ps)
    assert res.tables["attempts"]["learner_id"].nunique() == 3
    r = res.rejects.iloc[0]
    assert (r.source_line, r.column, r.kind) == (4, "actor", "rejected")
    assert r.reason.startswith("statement 4: missing actor")


def test_missing_fields_and_bad_values(tmp_path, ps):
    no_obj = stmt(2)
    del no_obj["object"]
    no_ts = stmt(3)
    del no_ts["timestamp"]
    no_verb = stmt(6)
    del no_verb["verb"]
    sts = [stmt(1), no_obj, no_ts, stmt(4, ts="last tuesday"), stmt(5, result={"success": True, "duration": "90 seconds"}), no_verb]
    res = ingest(write(tmp_path, sts, "lines", "lrs.jsonl"), ps)
    rej = res.rejects.set_index("source_line")
    assert rej.loc[2, "column"] == "object.id" and rej.loc[2, "reason"] == "line 2: missing object id"
    assert rej.loc[3, "column"] == "timestamp" and "missing timestamp" in rej.loc[3, "reason"]
    assert "cannot parse timestamp 'last tuesday'" in rej.loc[4, "reason"]
    assert rej.loc[5, "column"] == "result.duration"
    assert rej.loc[6, "column"] == "verb.id"
    assert len(res.tables["attempts"]) == 1


def test_bad_json_line_is_rejected_not_fatal(tmp_path, ps):
    lines = [json.dumps(stmt(1)), '{"actor": {"account": {"name": "dana.secret"}}, "verb": ', "", json.dumps(stmt(3))]
    res = ingest(write(tmp_path, lines, "lines", "lrs.jsonl"), ps)
    assert len(res.tables["attempts"]) == 2
    r = res.rejects.iloc[0]
    assert (r.source_line, r.column) == (2, "$") and r.reason.startswith("line 2: bad JSON")
    assert list(res.tables["attempts"]["source_line"]) == [1, 4]


def test_bad_json_array_is_a_file_error(tmp_path, ps):
    p = tmp_path / "lrs.json"
    p.write_text('[{"actor": {}, "verb": {}},\n  {oops}]', encoding="utf-8")
    with pytest.raises(DataError, match=r"lrs.json: not valid JSON at line 2"):
        read_file(p, cohort="x", pseudonymiser=ps, format="xapi")


def test_answer_without_success_is_skipped(tmp_path, ps):
    res = ingest(write(tmp_path, [stmt(1, result={"response": "x"})]), ps)
    assert res.rejects.iloc[0]["kind"] == "skipped"
    assert "without result.success" in res.rejects.iloc[0]["reason"]


def test_ids_duplicates_and_hashes(tmp_path, ps):
    sts = [stmt(1), stmt(1), stmt(2, sid=False), stmt(3, sid=False, ts="2024-03-01T10:05:00Z")]
    res = ingest(write(tmp_path, sts), ps)
    att = res.tables["attempts"]
    assert len(att) == 3
    assert att["attempt_id"].iloc[1].startswith("xs_") and att["attempt_id"].is_unique
    assert "duplicate of statement 1" in res.rejects.iloc[0]["reason"]
    again = ingest(write(tmp_path, sts), ps)
    assert again.tables["attempts"]["attempt_id"].equals(att["attempt_id"])


def test_extensions_attempt_step_and_kc_options(tmp_path, ps):
    ext = {"https://w3id.org/xapi/course-research/attempt": 3, "https://w3id.org/xapi/course-research/step": "part-b",
           "https://example.org/skills": ["s1", "s2"]}
    p = write(tmp_path, [stmt(1, extra_ctx=ext, kc="kc-a")])
    att = ingest(p, ps).tables["attempts"]
    assert (att.loc[0, "attempt"], att.loc[0, "step_id"]) == (3, "part-b")
    res = ingest(p, ps, options={"kc_extensions": {"Skills": "https://example.org/skills"}, "keep_full_iri": True})
    assert sorted(res.tables["attempt_kcs"]["kc"]) == ["s1", "s2"]
    assert set(res.tables["attempt_kcs"]["kc_model"]) == {"Skills"}
    assert res.tables["attempts"].loc[0, "item_id"] == f"{COURSE}/items/q1"
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'kc' for format 'xapi'; valid options: .*kc_extensions"):
        read_file(p, cohort="x", pseudonymiser=ps, options={"kc": "x"})


def test_empty_statements(tmp_path, ps):
    res = ingest(write(tmp_path, [], "wrapper"), ps)
    assert res.n_read == 0 and res.tables["attempts"].empty
    p = tmp_path / "empty.json"
    p.write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_file(p, cohort="x", pseudonymiser=ps, format="xapi")


def test_simulated_xapi_and_datashop_give_the_same_attempts(tmp_path, ps):
    """The simulator writes one course run as DataShop tx, xAPI lines and an xAPI array:
    the three ingests agree with each other and with the simulator's own attempts table."""
    from research.simulate import simulate_cohort

    sim = simulate_cohort(n_learners=10, seed=5, cohort="rt")
    files = sim.write(tmp_path, formats=("datashop", "xapi", "xapi-json"))
    cols = ["learner_id", "item_id", "step_id", "attempt", "outcome", "timestamp"]
    want = sim.tables["attempts"].assign(learner_id=lambda d: ps.series(d["learner_id"]))
    want = want[cols].sort_values(cols).reset_index(drop=True)
    kc_counts = []
    for key in ("datashop", "xapi", "xapi_json"):
        res = ingest(files[key], ps)
        assert res.rejects.empty
        got = res.tables["attempts"][cols].sort_values(cols).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
        kc_counts.append(res.tables["attempt_kcs"].groupby("kc_model").size().to_dict())
    assert kc_counts[0] == kc_counts[1] == kc_counts[2] == sim.tables["attempt_kcs"].groupby("kc_model").size().to_dict()
