"""Index pages: key figures per run and the cross-cohort trend (research.report_index)."""

from __future__ import annotations

import json

import pandas as pd

from research.report_index import key_figures, write_reports_index


def _run(reports, cohort, run_id, finished, n_items, severities, g_avg, completion):
    folder = reports / cohort
    folder.mkdir(parents=True)
    pd.DataFrame({"item_id": [f"i{j}" for j in range(n_items)]}).to_csv(folder / "items.csv", index=False)
    pd.DataFrame({"severity": severities}).to_csv(folder / "recommendations.csv", index=False)
    pd.DataFrame({"module": ["M1", "M2", "M1"], "group_variable": ["all", "all", "gender"], "group": ["all", "all", "female"],
                  "g_avg": [g_avg - 0.1, g_avg + 0.1, 0.9]}).to_csv(folder / "gains.csv", index=False)
    pd.DataFrame({"position": [1, 2], "share": [1.0, completion]}).to_csv(folder / "funnel.csv", index=False)
    manifest = {"cohort": cohort, "run_id": run_id, "finished": finished, "outcome": "ok", "package": {"version": "0.1.0"}}
    manifest["key_figures"] = key_figures(folder)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest["key_figures"]


def test_key_figures_come_from_the_run_tables(tmp_path):
    figures = _run(tmp_path, "a", "r1", "2026-01-01T10:00:00+00:00", 40, ["high", "high", "low"], 0.3, 0.7)
    assert figures == {"items": 40, "rec_high": 2, "rec_medium": 0, "rec_low": 1, "mean_gain": 0.3, "completion_rate": 0.7}


def test_index_lists_every_cohort_newest_first_with_a_trend(tmp_path):
    _run(tmp_path, "demo", "r1", "2026-01-01T10:00:00+00:00", 68, ["high"] * 7, 0.18, 0.67)
    _run(tmp_path, "demo-2", "r2", "2026-02-01T10:00:00+00:00", 66, ["high"] * 3, 0.25, 0.72)
    _run(tmp_path, "demo-3", "r3", "2026-03-01T10:00:00+00:00", 65, ["high"] * 1, 0.31, 0.80)
    html = write_reports_index(tmp_path).read_text()
    rows = html.split("<tbody>")[1]
    assert rows.index("demo-3") < rows.index("demo-2") < rows.index(">demo<")
    assert "<td>68</td>" in rows and "<td>65</td>" in rows
    assert "0.31" in rows and "80%" in rows
    assert 'src="data:image/png;base64,' in html and 'alt="Line charts' in html
    # a second call adds nothing twice
    write_reports_index(tmp_path)
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 3


RECORD = """
import sys
from pathlib import Path
from research.report_index import record_run
for i in range(int(sys.argv[3])):
    record_run(Path(sys.argv[1]), {"cohort": sys.argv[2], "run_id": f"{sys.argv[2]}-{i}", "finished": f"2026-01-01T00:00:{i:02d}",
                                   "outcome": "failed" if i % 2 else "ok", "reason": "x" * 5000})
"""


def test_concurrent_history_appends_never_interleave_and_the_index_is_whole(tmp_path):
    import subprocess
    import sys

    from research.report_index import read_history

    procs = [subprocess.Popen([sys.executable, "-c", RECORD, str(tmp_path), f"c{k}", "8"]) for k in range(4)]
    assert all(p.wait(timeout=180) == 0 for p in procs)
    rows, bad = read_history(tmp_path)
    assert bad == 0 and len(rows) == 32 and len({r["run_id"] for r in rows}) == 32
    html = (tmp_path / "index.html").read_text()
    assert html.rstrip().endswith("</html>")
    assert not list(tmp_path.glob(".index.html.tmp-*"))


def test_torn_lines_anywhere_in_the_history_are_skipped_and_counted(tmp_path):
    from research.report_index import read_history, record_run

    good = json.dumps({"cohort": "a", "run_id": "r1", "finished": "2026-01-01", "outcome": "ok"})
    (tmp_path / "runs.jsonl").write_bytes((good + "\n" + good[:20] + "\n\xff\xfe garbage\n[1, 2]\n" + good[:33]).encode("utf-8", "surrogateescape"))
    rows, bad = read_history(tmp_path)
    assert [r["run_id"] for r in rows] == ["r1"] and bad == 4
    record_run(tmp_path, {"cohort": "b", "run_id": "r2", "finished": "2026-01-02", "outcome": "killed", "reason": "killed"})
    rows, bad = read_history(tmp_path)
    assert [r["run_id"] for r in rows] == ["r1", "r2"] and bad == 4  # the new line did not glue onto the torn one
    html = (tmp_path / "index.html").read_text()
    assert "killed" in html and "did not succeed" in html
