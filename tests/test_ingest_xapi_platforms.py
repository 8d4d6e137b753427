"""xAPI as the platforms send it: OLI Torus, Open edX, cmi5, the ADL spec, Potsie video (ralph).

The statements are the projects' own, read in place from ../shared/data/xapi_platform_statements;
the expected results are the ones its README gives per file (first attempts, items, hints,
reveals, AU results, voided).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from research.errors import ConfigError
from research.ingest import read_file
from research.ingest.xapi_profile import load_profile
from research.pseudonym import Pseudonymiser
from research.warehouse import Warehouse

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xapi_platform_statements"
TORUS = DATA / "oli_torus"
EDX = DATA / "openedx_event_routing_backends" / "xapi_expected"
CMI5 = DATA / "cmi5_spec" / "scenarios"
ADL = DATA / "adl_spec"
VOID_TARGET = "e05aa883-acaf-40ad-bf54-02c8ce485fb0"

# raw learner ids in the fixtures (actor account names, mboxes, authority): none may reach
# warehouse bytes, quarantine, output or reports
RAW_IDS = ["32e08e30-f8ae-4ce2-94a8-c2bfe38a70cb", "student@example.edu", "admin@example.adlnet.gov", "Example Admin",
           "anna.secret@example.org", "bo.secret"]


def need(path: Path) -> Path:
    if not path.exists():
        if os.environ.get("RESEARCH_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"{path} is missing and RESEARCH_REQUIRE_REAL_DATA=1")
        pytest.skip(f"{path} not present (public fixture read in place from ../shared/data)")
    return path


pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def ps():
    return Pseudonymiser(key=b"k-platforms")


def read(path, ps, **options):
    res = read_file(need(path), cohort="x", pseudonymiser=ps, format="xapi", options=options or None)
    c = res.counts
    # every statement is loaded, voided in the same file, rejected or skipped
    assert res.n_read == c["statements_loaded"] + c["statements_voided_here"] + c["rejected"] + c["skipped"]
    assert res.n_read == c["statements_loaded"] + c["statements_voided_here"] + len(res.rejects)
    return res


def raw_id_scan(*texts: str) -> None:
    blob = "\n".join(texts)
    for raw in RAW_IDS:
        assert raw not in blob, f"raw learner id {raw!r} leaked"


def first_attempts(att: pd.DataFrame) -> pd.Series:
    return att[att["attempt"] == 1]["outcome"].value_counts()


# ---------------------------------------------------------------- OLI Torus
def test_torus_part_attempt_with_hint_and_objective(ps):
    res = read(TORUS / "evaluated.json", ps)
    assert res.counts["profile"] == "torus" and res.counts["profile_how"] == "sniffed"
    att = res.tables["attempts"]
    # README: item activity 151805 part 1, incorrect (0/1, success true ignored), 1 hint before it
    assert list(att["item_id"].unique()) == ["Activity 151805, Part 1"]
    assert list(att["outcome"]) == ["hint", "incorrect"] and list(att["attempt"]) == [1, 2]
    assert first_attempts(att).to_dict() == {"hint": 1}
    assert att["page"].iloc[1] == "151862" and att["response"].iloc[1] == "3232399286"
    kcs = res.tables["attempt_kcs"]
    assert set(kcs["kc_model"]) == {"Objectives"} and set(kcs["kc"]) == {"145551"} and len(kcs) == 2
    assert res.counts["rules"] == {"part_attempt": 1}


@pytest.mark.parametrize(("name", "outcome", "item", "objective"), [
    ("etl_lambda_test_part_attempt.json", "incorrect", "Activity 80772, Part 132824041", "120498"),
    ("experiment_attributed_part_attempt.jsonl", "correct", "Activity 606, Part part-1", None),
])
def test_torus_graded_by_raw_equals_max(ps, name, outcome, item, objective):
    res = read(TORUS / name, ps)
    att = res.tables["attempts"]
    assert (len(att), att["outcome"].iloc[0], att["item_id"].iloc[0], att["attempt"].iloc[0]) == (1, outcome, item, 1)
    assert list(res.tables["attempt_kcs"]["kc"]) == ([objective] if objective else [])
    assert res.rejects.empty


@pytest.mark.parametrize(("name", "n_skipped", "rule"), [
    ("upgrade_data_capture_parity_statement.json", 1, "activity_attempt"),
    ("experiment_condition_assignment_statement.json", 1, "not_an_answer"),
    ("clickhouse_uploader_test_legacy_statements.jsonl", 2, "legacy_answer_without_part"),
])
def test_torus_statements_that_are_not_item_responses(ps, name, n_skipped, rule):
    res = read(TORUS / name, ps, profile="torus")
    assert res.tables["attempts"].empty
    assert (res.rejects["kind"] == "skipped").sum() == n_skipped
    assert res.rejects["reason"].str.contains(f"rule '{rule}'").any()
    raw_id_scan(res.rejects["raw"].str.cat(sep=" "))


# ---------------------------------------------------------------- Open edX
EDX_ANSWERS = {  # file: (outcome of the one answer, item block, attempt)
    "problem_check(server).json": ("incorrect", "3fc5461f86764ad7bdbdf6cbdde61e66", 10),
    "problem_check(server).max_grade_0.json": ("incorrect", "3fc5461f86764ad7bdbdf6cbdde61e66", 10),
    "problem_check(server,string_anwers).json": ("incorrect", "3fc5461f86764ad7bdbdf6cbdde61e66", 10),
    "problem_check(server,multiple_questions,correct).json": ("correct", "a0effb954cca4759994f1ac9e9434bf4", 1),
    "problem_check(server,multiple_questions,incorrect).json": ("incorrect", "a0effb954cca4759994f1ac9e9434bf4", 1),
    "problem_check(server,multiple_questions,partial_correct).json": ("incorrect", "a0effb954cca4759994f1ac9e9434bf4", 1),
}


@pytest.mark.parametrize("name", sorted(EDX_ANSWERS))
def test_openedx_problem_check_is_one_answer_per_problem(ps, name):
    res = read(EDX / name, ps)
    assert res.counts["profile"] == "openedx"
    att = res.tables["attempts"]
    outcome, block, attempt = EDX_ANSWERS[name]
    assert len(att) == 1, "a multi-question problem counts once (its parent), never once per child as well"
    assert att["outcome"].iloc[0] == outcome and att["item_id"].iloc[0].endswith("block@" + block)
    assert att["item_id"].iloc[0].startswith("block-v1:edX+DemoX+Demo_Course+type@problem")
    assert att["attempt"].iloc[0] == attempt
    if "multiple_questions" in name:
        assert res.counts["rules"] == {"problem_check": 1, "multi_question_child": 3}


def test_openedx_hint_reveal_and_the_whole_folder(ps):
    hint = read(EDX / "edx.problem.hint.demandhint_displayed.json", ps).tables["attempts"]
    assert list(hint["outcome"]) == ["hint"] and hint["item_id"].iloc[0].endswith("block@07adfed616844fa780c606b55270a090")
    reveal = read(EDX / "showanswer.json", ps)
    assert reveal.tables["attempts"].empty and reveal.counts["rules"] == {"show_answer": 1}
    assert "answer reveal on item 'block-v1:edX+DemoX+Demo_Course+type@problem+block@3fc5461f" in reveal.rejects["reason"].iloc[0]
    totals = {"statements": 0, "answers": 0, "hints": 0, "reveals": 0, "rejected": 0}
    for f in sorted(need(EDX).glob("*.json")):
        res = read(f, ps, profile="openedx")
        att = res.tables["attempts"]
        totals["statements"] += res.n_read
        totals["answers"] += int(att["outcome"].isin(["correct", "incorrect"]).sum())
        totals["hints"] += int((att["outcome"] == "hint").sum())
        totals["reveals"] += res.counts["rules"].get("show_answer", 0)
        totals["rejected"] += res.counts["rejected"]
        if f.name not in EDX_ANSWERS and "hint" not in f.name:
            assert att.empty, f.name
            assert (res.rejects["kind"] == "skipped").all() and res.rejects["reason"].str.contains("verb '").all(), f.name
        raw_id_scan(res.rejects["raw"].str.cat(sep=" "), att.to_csv())
    # README: 49 files, 58 statements; 6 graded answers, 1 hint, 1 reveal
    assert totals == {"statements": 58, "answers": 6, "hints": 1, "reveals": 1, "rejected": 0}


# ---------------------------------------------------------------- cmi5
CMI5_RESULTS = {  # scenario: AU results (score, max) per README
    "01-typical-non_credit_session": [], "03-completed_or_passed-passed": [], "04-completed_or_passed-completed": [],
    "06-completed-completed": [], "07-passed-passed": [(1.0, 1.0)], "08-passed-masteryScore-passed": [(94.0, 100.0)],
    "09-completed_and_passed": [(1.0, 1.0)], "10-completed_and_passed-masteryScore": [(88.0, 100.0)],
    "12-allowed_statement": [], "14-completed_and_passed-multiple_sessions": [(1.0, 1.0)], "15-review_mode": [],
    "18-cmi5-allowed-passed": [(1.0, 1.0)],
}


@pytest.mark.parametrize("scenario", sorted(CMI5_RESULTS))
def test_cmi5_au_results_fill_assessments(ps, scenario):
    folder = need(CMI5 / scenario)
    got = []
    for f in sorted(folder.glob("*statement*.json")):
        res = read(f, ps, profile="cmi5")
        assert res.tables["attempts"].empty
        a = res.tables["assessments"]
        assert (a["phase"] == "post").all() and (a["item_id"] == "total").all()
        got += list(zip(a["score"], a["max_score"]))
        if len(a):
            assert a["instrument"].iloc[0].startswith("http")
    assert got == CMI5_RESULTS[scenario]


def test_adl_cmi5_failed_example(ps):
    res = read(ADL / "xAPI-About_AppendixB_cmi5_example_failed.json", ps)
    a = res.tables["assessments"]
    assert res.counts["profile"] == "cmi5"
    assert (a["instrument"].iloc[0], a["score"].iloc[0], a["max_score"].iloc[0]) == ("https://example.adlnet.gov/AUidentifier", 65.0, 100.0)


# ---------------------------------------------------------------- ADL spec and voiding
def test_adl_examples(ps):
    assert read(ADL / "xAPI-Data_2.4.4.3_statementref_example_commented.json", ps).tables["attempts"].empty
    assert read(ADL / "xAPI-Data_2.4_statement_properties_example_created.json", ps).tables["attempts"].empty
    cbt = read(ADL / "xAPI-Data_AppendixA_attempted_simpleCBT.json", ps)  # open decision: adl keeps today's reading
    assert list(cbt.tables["attempts"]["outcome"]) == ["correct"]
    v = read(ADL / "xAPI-Data_2.3.2_voiding_example.json", ps)
    assert v.tables["attempts"].empty and list(v.voids["statement_id"]) == [VOID_TARGET]
    assert v.rejects["kind"].tolist() == ["skipped"] and VOID_TARGET in v.rejects["reason"].iloc[0]
    raw_id_scan(v.rejects["raw"].str.cat(sep=" "))


def _target(tmp_path, name="target.json", ts="2024-03-01T10:00:00Z"):
    st = {"id": VOID_TARGET, "actor": {"mbox": "mailto:anna.secret@example.org"}, "verb": {"id": "http://adlnet.gov/expapi/verbs/answered"},
          "object": {"id": "https://lms.example.org/items/q1"}, "result": {"success": True}, "timestamp": ts,
          "context": {"extensions": {"https://w3id.org/xapi/course-research/kc/Default": "kc1"}}}
    other = dict(st, id="e05aa883-0000-40ad-bf54-02c8ce485fb1", object={"id": "https://lms.example.org/items/q2"})
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(s) for s in (st, other)) + "\n", encoding="utf-8")
    return p


@pytest.mark.parametrize("order", ["target first", "void first"])
def test_voiding_across_files_with_audit_and_idempotent_reingest(tmp_path, ps, order):
    void = need(ADL / "xAPI-Data_2.3.2_voiding_example.json")
    target = _target(tmp_path)
    files = [target, void] if order == "target first" else [void, target]
    with Warehouse(tmp_path / "wh.duckdb") as wh:
        s1 = wh.ingest(files, cohort="c", pseudonymiser=ps)
        att = wh.table("attempts", "c")
        assert list(att["item_id"]) == ["q2"], "the voided statement is removed, nothing else"
        assert wh.table("attempt_kcs", "c")["attempt_id"].tolist() == ["e05aa883-0000-40ad-bf54-02c8ce485fb1"]
        audit = wh.con.execute("SELECT statement_id, table_name, row_id, \"row\" FROM voided").df()
        assert len(audit) == 1 and audit["statement_id"].iloc[0] == VOID_TARGET and '"item_id":"q1"' in audit["row"].iloc[0]
        assert "voiding: 1 rows removed now" in str(s1)
        # the same target again, in a new file (a later pull): removed again, audit unchanged
        again = _target(tmp_path, "target-again.json")
        again.write_text(again.read_text(encoding="utf-8") + "\n", encoding="utf-8")
        wh.ingest([again, void, target], cohort="c", pseudonymiser=ps)
        assert list(wh.table("attempts", "c")["item_id"]) == ["q2"]
        assert wh.con.execute("SELECT count(*) FROM voided").fetchall()[0][0] == 1
        everything = wh.con.execute("SELECT string_agg(CAST(to_json(q) AS VARCHAR), ' ') FROM quarantine q").fetchall()[0][0] or ""
        everything += wh.con.execute("SELECT string_agg(\"row\", ' ') FROM voided").fetchall()[0][0]
    raw_id_scan(everything, str(s1), (tmp_path / "wh.duckdb").read_bytes().decode("latin-1"))


def test_void_in_the_same_file_and_unknown_target(tmp_path, ps):
    st = json.loads(_target(tmp_path).read_text(encoding="utf-8").splitlines()[0])
    voider = {"id": "v-1", "actor": {"mbox": "mailto:admin@example.adlnet.gov"}, "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
              "object": {"objectType": "StatementRef", "id": VOID_TARGET}}
    nowhere = dict(voider, id="v-2", object={"objectType": "StatementRef", "id": "00000000-dead-4000-8000-000000000000"})
    p = tmp_path / "mixed.jsonl"
    p.write_text("\n".join(json.dumps(s) for s in (st, voider, nowhere)), encoding="utf-8")
    res = read(p, ps)
    assert res.tables["attempts"].empty and res.counts["statements_voided_here"] == 1
    assert list(res.voided_rows["statement_id"]) == [VOID_TARGET]
    with Warehouse(tmp_path / "w.duckdb") as wh:
        summary = wh.ingest([p], cohort="c", pseudonymiser=ps)
        assert "1 voids waiting for a statement not loaded yet" in str(summary)
        assert wh.con.execute("SELECT table_name FROM voided").fetchall() == [("attempts",)]


# ---------------------------------------------------------------- Potsie video via ralph's sample data
def test_potsie_video_statements_are_never_answers(ps):
    res = read(DATA / "ralph_potsie_video" / "statements_played_paused_seeked_interacted.jsonl.gz", ps)
    assert res.n_read == 19624 and res.tables["attempts"].empty
    assert (res.rejects["kind"] == "skipped").all() and res.counts["rejected"] == 0
    assert res.counts["unmatched_verbs"] == {"https://w3id.org/xapi/video/verbs/played": 6603, "https://w3id.org/xapi/video/verbs/paused": 6480,
                                             "http://adlnet.gov/expapi/verbs/interacted": 3546, "https://w3id.org/xapi/video/verbs/seeked": 2995}


# ---------------------------------------------------------------- profiles
def test_profile_file_validation_names_the_bad_key(tmp_path, ps):
    p = tmp_path / "lms.yaml"
    p.write_text("name: lms\nrules:\n  - name: a\n    kind: answer\n    verb: [x]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"lms.yaml.rules\[1\]: unknown key\(s\) 'verb'; valid keys: .*verbs"):
        load_profile(str(p))
    p.write_text("name: lms\nfeilds: {}\nrules: []\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'feilds'; valid keys: assessment, correct, description, detect, fields, name, rules"):
        load_profile(str(p))
    p.write_text("name: lms\nrules:\n  - {name: a, kind: grade}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'grade' is not a rule kind; valid kinds: answer, hint, reveal, assessment, ignore"):
        load_profile(str(p))
    with pytest.raises(ConfigError, match=r"unknown xAPI profile 'moodle'.*torus, openedx, cmi5, adl"):
        load_profile("moodle")


def test_custom_profile_scaled_threshold(tmp_path, ps):
    prof = tmp_path / "lms.yaml"
    prof.write_text(
        "name: lms\ncorrect: {rule: scaled, threshold: 0.8}\nfields:\n  item: {path: object.id, last_segment: true}\n"
        "  kcs: {Skills: 'context.extensions[https://lms.example.org/skills]'}\n"
        "rules:\n  - {name: graded, kind: answer, verbs: ['https://lms.example.org/verbs/graded']}\n", encoding="utf-8")
    sts = [{"actor": {"account": {"name": "anna.secret"}}, "verb": {"id": "https://lms.example.org/verbs/graded"}, "object": {"id": f"https://x/q{i}"},
            "result": {"score": {"scaled": s}}, "timestamp": "2024-01-01T00:00:0%dZ" % i,
            "context": {"extensions": {"https://lms.example.org/skills": ["a", "b"]}}} for i, s in enumerate([0.9, 0.5])]
    p = tmp_path / "s.json"
    p.write_text(json.dumps(sts), encoding="utf-8")
    res = read(p, ps, profile=str(prof))
    assert list(res.tables["attempts"]["outcome"]) == ["correct", "incorrect"]
    assert sorted(res.tables["attempt_kcs"]["kc"]) == ["a", "a", "b", "b"]


# ---------------------------------------------------------------- bad input (issue 13)
def test_bad_lines_are_quarantined_and_the_rest_loads(tmp_path, ps):
    good = json.loads((need(TORUS / "etl_lambda_test_part_attempt.json")).read_text(encoding="utf-8"))
    no_max = json.loads(json.dumps(good))
    no_max["id"] = "x-no-max"
    del no_max["result"]["score"]["max"]
    no_item = json.loads(json.dumps(good))
    no_item["id"] = "x-no-item"
    del no_item["context"]["extensions"]["http://oli.cmu.edu/extensions/part_id"]
    odd_verb = dict(good, id="x-odd", verb={"id": "https://lms.example.org/verbs/pondered"})
    lines = [
        json.dumps(good),
        "[" * 1000 + "]" * 1000,
        '{"actor": {"mbox": "mailto:anna.secret@example.org"}, "verb": {"id": "\\ud800"}}',
        '{"actor": {"mbox": "mailto:anna.secret@example.org"}, "verb": ',
        json.dumps(no_max), json.dumps(no_item), json.dumps(odd_verb),
    ]
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = read(p, ps, profile="torus")
    assert len(res.tables["attempts"]) == 1
    r = res.rejects.set_index("source_line")
    assert "nested too deeply" in r.loc[2, "reason"] and "lone UTF-16 surrogate" in r.loc[3, "reason"]
    assert r.loc[4, "reason"].startswith("line 4: bad JSON")
    assert r.loc[5, "column"] == "result.score.max" and "score without max" in r.loc[5, "reason"]
    assert r.loc[6, "reason"] == "line 6: missing item (Activity {activity}, Part {part})"
    assert r.loc[7, "kind"] == "skipped" and "verb 'pondered'" in r.loc[7, "reason"] and "pondered" in str(res.counts["unmatched_verbs"])
    with Warehouse(tmp_path / "w.duckdb") as wh:
        summary = wh.ingest([p], cohort="c", pseudonymiser=ps, options={"profile": "torus"})
        q = wh.table("quarantine", "c")
        assert len(q) == 6 and len(wh.table("attempts", "c")) == 1
    raw_id_scan(q.to_csv(), str(summary), (tmp_path / "w.duckdb").read_bytes().decode("latin-1"))
    assert "15474" not in q["raw"].str.cat(sep=" ")  # the Torus actor account name


def test_cli_ingest_with_profile_prints_rules(tmp_path, capsys):
    from research.cli import main

    wh = tmp_path / "w.duckdb"
    code = main(["ingest", str(need(TORUS / "evaluated.json")), str(need(EDX / "showanswer.json")), "--cohort", "c",
                 "--format", "xapi", "--warehouse", str(wh)])
    out = capsys.readouterr()
    assert code == 2 or code == 0
    assert "xAPI profile: torus (sniffed from the statements)" in out.out and "statements per rule: part_attempt 1" in out.out
    assert "xAPI profile: openedx" in out.out and "show_answer 1" in out.out
    code = main(["ingest", str(TORUS / "experiment_attributed_part_attempt.jsonl"), "--cohort", "c", "--profile", "nope", "--warehouse", str(wh)])
    err = capsys.readouterr().err
    assert code == 1 and "unknown xAPI profile 'nope'" in err and "Traceback" not in err
    raw_id_scan(out.out, out.err, err)


def test_voiding_a_torus_answer_removes_its_hint_rows(tmp_path, ps):
    st = json.loads(need(TORUS / "evaluated.json").read_text(encoding="utf-8"))
    st["id"] = "5dfd26a4-6846-4fb6-afe2-fbbbd0a24e0d"
    (tmp_path / "a.json").write_text(json.dumps(st), encoding="utf-8")
    void = {"id": "v-9", "actor": {"mbox": "mailto:admin@example.adlnet.gov"}, "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
            "object": {"objectType": "StatementRef", "id": st["id"]}, "timestamp": "2024-07-11T00:00:00Z"}
    (tmp_path / "v.json").write_text(json.dumps(void), encoding="utf-8")
    with Warehouse(tmp_path / "w.duckdb") as wh:
        wh.ingest([tmp_path / "a.json"], cohort="c", pseudonymiser=ps)
        assert sorted(wh.table("attempts", "c")["attempt_id"]) == [st["id"], st["id"] + "#hint1"]
        wh.ingest([tmp_path / "v.json"], cohort="c", pseudonymiser=ps)
        assert wh.table("attempts", "c").empty and wh.table("attempt_kcs", "c").empty
        assert sorted(r[0] for r in wh.con.execute("SELECT row_id FROM voided").fetchall()) == [st["id"], st["id"] + "#hint1"]
