"""One simulated run of graded part attempts written three ways, as the platforms write them:
DataShop tutor-message XML (Torus's dataset export: a context message per problem start,
then tool/tutor message pairs with meta), OLI Torus xAPI part-attempt statements (JSON
lines) and the tab-delimited DataShop transaction export. The three files hold the same
attempts, for tests and for ``benchmarks/bench_platforms.py``.

The writers stream (one line or message at a time), so 1M transactions need little memory.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

__all__ = ["write_datashop_tab", "write_torus_xapi", "write_xml"]

T0 = datetime(2024, 7, 10, 7, 0, 0)
_CTX = ('<context_message context_message_id="{ctx}" name="START_PROBLEM"><meta><user_id>{user}</user_id><session_id>{sess}</session_id>'
        '<time>{time}</time><time_zone>GMT</time_zone></meta><dataset><name>bench</name><level type="Container"><name>Unit {unit}</name>'
        '<level type="Page"><name>Page {page}</name><problem tutorFlag="tutor"><name>{problem}</name></problem></level></level></dataset></context_message>\n')
_MSG = ('<{tag} context_message_id="{ctx}"><meta><user_id>{user}</user_id><session_id>{sess}</session_id><time>{time}</time>'
        '<time_zone>GMT</time_zone></meta><problem_name>{problem}</problem_name><semantic_event transaction_id="{tx}" name="{event}" />'
        '<event_descriptor><selection>{problem}</selection><action>Multiple choice submission</action><input>{input}</input></event_descriptor>'
        '{evaluation}</{tag}>\n')


def transactions(n_transactions: int, *, seed: int = 0, n_learners: int | None = None, n_activities: int = 200):
    """Yield (learner, activity, part, outcome, time, tx id, objective) for ``n_transactions`` graded answers."""
    rng = np.random.default_rng(seed)
    n_learners = n_learners or max(1, n_transactions // 50)
    learner = rng.integers(0, n_learners, n_transactions)
    activity = rng.integers(0, n_activities, n_transactions)
    correct = rng.random(n_transactions) < 0.65
    seconds = np.sort(rng.integers(0, 60 * 86400, n_transactions))
    for k in range(n_transactions):
        a = int(activity[k])
        yield (f"{10000 + int(learner[k])}", 150000 + a, "1", "CORRECT" if correct[k] else "INCORRECT",
               T0 + timedelta(seconds=int(seconds[k])), f"tx-{seed}-{k}", 140000 + a % 40)


def write_xml(path, n_transactions: int, *, seed: int = 0, **kw) -> Path:
    path = Path(path)
    seen = set()
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<tutor_related_message_sequence version_number="4">\n')
        for user, act, part, outcome, t, tx, obj in transactions(n_transactions, seed=seed, **kw):
            problem = f"Activity {act}, Part {part}"
            ctx = f"{act}-{user}"
            time = t.strftime("%Y-%m-%d %H:%M:%S")
            sess = f"{t:%Y-%m-%d}-{user}"
            if ctx not in seen:
                seen.add(ctx)
                fh.write(_CTX.format(ctx=ctx, user=user, sess=sess, time=time, unit=act % 10, page=act % 50, problem=problem))
            common = dict(ctx=ctx, user=user, sess=sess, time=time, problem=problem, tx=tx, input=f"choice {outcome[0]}")
            fh.write(_MSG.format(tag="tool_message", event="ATTEMPT", evaluation="", **common))
            fh.write(_MSG.format(tag="tutor_message", event="RESULT",
                                 evaluation=f"<action_evaluation>{outcome}</action_evaluation><skill><name>objective {obj}</name></skill>", **common))
        fh.write("</tutor_related_message_sequence>\n")
    return path


def write_torus_xapi(path, n_transactions: int, *, seed: int = 0, **kw) -> Path:
    path = Path(path)
    ext = "http://oli.cmu.edu/extensions/"
    with open(path, "w", encoding="utf-8") as fh:
        for user, act, part, outcome, t, tx, obj in transactions(n_transactions, seed=seed, **kw):
            st = {
                "id": tx,
                "actor": {"account": {"homePage": "proton.oli.cmu.edu", "name": int(user)}, "objectType": "Agent"},
                "context": {"extensions": {ext + "activity_id": act, ext + "part_id": part, ext + "attached_objectives": [obj],
                                           ext + "hints_requested": [], ext + "page_id": 151000 + act % 50, ext + "part_attempt_number": 1}},
                "object": {"definition": {"name": {"en-US": "Part Attempt"}, "type": "http://adlnet.gov/expapi/activities/question"},
                           "id": f"proton.oli.cmu.edu/part_attempt/{tx}}}", "objectType": "Activity"},
                "result": {"completion": True, "response": {"files": [], "input": f"choice {outcome[0]}"},
                           "score": {"max": 1, "min": 0, "raw": 1 if outcome == "CORRECT" else 0}, "success": True},
                "timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "verb": {"display": {"en-US": "completed"}, "id": "http://adlnet.gov/expapi/verbs/completed"},
            }
            fh.write(json.dumps(st) + "\n")
    return path


def write_datashop_tab(path, n_transactions: int, *, seed: int = 0, **kw) -> Path:
    path = Path(path)
    cols = ["Transaction Id", "Anon Student Id", "Session Id", "Time", "Time Zone", "Level (Container)", "Level (Page)",
            "Problem Name", "Step Name", "Outcome", "Input", "KC (Default)"]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\t".join(cols) + "\n")
        for user, act, part, outcome, t, tx, obj in transactions(n_transactions, seed=seed, **kw):
            problem = f"Activity {act}, Part {part}"
            fh.write("\t".join([tx, user, f"{t:%Y-%m-%d}-{user}", t.strftime("%Y-%m-%d %H:%M:%S"), "GMT", f"Unit {act % 10}",
                                f"Page {act % 50}", problem, problem, outcome, f"choice {outcome[0]}", f"objective {obj}"]) + "\n")
    return path
