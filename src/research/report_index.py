"""Index pages: one per cohort run (``reports/COHORT/index.html``) and one across cohorts.

The cohort index links the notebooks' HTML, the course developer's report and the CSV
tables, and shows the run manifest (inputs with their hashes, code version,
environment, timings). ``reports/index.html`` lists every successful run of every
cohort, newest first, with its key figures (items, recommendations by severity, mean
learning gain, completion rate) and a small trend plot, read from ``reports/runs.jsonl``,
a history that each successful run appends one line to.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pandas as pd
from jinja2 import Environment, select_autoescape

HISTORY = "runs.jsonl"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:70rem;padding:0 1rem;color:#1a1a1a;background:#fff;line-height:1.5}
table{border-collapse:collapse;margin:1rem 0;width:100%}th,td{border:1px solid #767676;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#e8e8e8}caption{text-align:left;font-weight:bold;margin-bottom:.3rem}a{color:#0645ad}a:focus{outline:3px solid #1a1a1a}
code{font-size:.9em;word-break:break-all}.ok{color:#1b5e20}.failed{color:#b00020}
"""

_COHORT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cohort {{ m.cohort }}: analysis run {{ m.run_id }}</title><style>{{ css }}</style></head>
<body><main>
<h1>Cohort {{ m.cohort }}</h1>
<p>Run {{ m.run_id }}, started {{ m.started }}, finished {{ m.finished }}: <strong class="{{ m.outcome }}">{{ m.outcome }}</strong>.</p>
{% if reports %}<h2>For course developers</h2><ul>{% for r in reports %}<li><a href="{{ r }}">{{ r }}</a></li>{% endfor %}</ul>{% endif %}
<h2>Notebooks</h2>
<table><caption>Notebooks of this run</caption><thead><tr><th scope="col">Notebook</th><th scope="col">Seconds</th><th scope="col">Outcome</th></tr></thead><tbody>
{% for nb in m.notebooks %}<tr><td><a href="{{ nb.notebook | replace('.ipynb', '.html') }}">{{ nb.notebook }}</a></td><td>{{ nb.seconds }}</td><td>{{ nb.outcome }}</td></tr>{% endfor %}
</tbody></table>
<h2>Tables</h2><ul>{% for t in tables %}<li><a href="{{ t }}">{{ t }}</a></li>{% endfor %}</ul>
<h2>Provenance</h2>
<table><caption>Input files</caption><thead><tr><th scope="col">File</th><th scope="col">SHA-256</th><th scope="col">Format</th><th scope="col">Rows read</th><th scope="col">Loaded</th><th scope="col">Rejected</th></tr></thead><tbody>
{% for f in m.inputs %}<tr><td>{{ f.file }}</td><td><code>{{ f.sha256 }}</code></td><td>{{ f.format }}</td><td>{{ f.rows_read }}</td><td>{{ f.rows_loaded }}</td><td>{{ f.rows_rejected }}</td></tr>{% endfor %}
</tbody></table>
<table><caption>Warehouse rows of this cohort</caption><thead><tr><th scope="col">Table</th><th scope="col">Rows</th></tr></thead><tbody>
{% for k, v in m.warehouse.row_counts.items() %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}
</tbody></table>
<p>course-research {{ m.package.version }}{% if m.package.commit %}, commit <code>{{ m.package.commit }}</code>{% if m.package.dirty %} (with uncommitted changes){% endif %}{% endif %};
Python {{ m.environment.python }}; {% for k, v in m.environment.libraries.items() %}{% if v %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endif %}{% endfor %}.
Fingerprint <code>{{ m.fingerprint }}</code>. The full record is in <a href="manifest.json">manifest.json</a>.</p>
</main></body></html>
"""

_ALL = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>course-research: all cohorts</title><style>{{ css }}</style></head>
<body><main>
<h1>All cohorts</h1>
<p>Every successful run, newest first. Follow a cohort's name to its latest report.</p>
{% if trend %}<h2>Trend</h2><img src="data:image/png;base64,{{ trend }}" alt="{{ trend_alt }}" style="max-width:100%">{% endif %}
<h2>Runs</h2>
<table><caption>Key figures per cohort and run</caption><thead><tr>
<th scope="col">Cohort</th><th scope="col">Run finished</th><th scope="col">Items</th><th scope="col">Recommendations (high / medium / low)</th>
<th scope="col">Mean normalised gain</th><th scope="col">Completion rate</th><th scope="col">Version</th></tr></thead><tbody>
{% for r in runs %}<tr><td><a href="{{ r.cohort }}/index.html">{{ r.cohort }}</a></td><td>{{ r.finished }}</td><td>{{ r['items'] if r['items'] is not none else '–' }}</td>
<td>{{ r.rec_high if r.rec_high is not none else '–' }} / {{ r.rec_medium if r.rec_medium is not none else '–' }} / {{ r.rec_low if r.rec_low is not none else '–' }}</td>
<td>{{ '%.2f' % r.mean_gain if r.mean_gain is not none else '–' }}</td><td>{{ '%.0f%%' % (100 * r.completion_rate) if r.completion_rate is not none else '–' }}</td><td>{{ r.version }}</td></tr>
{% endfor %}</tbody></table>
</main></body></html>
"""

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))


def _read(run_dir: Path, name: str) -> pd.DataFrame | None:
    path = run_dir / name
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None


def key_figures(run_dir: Path) -> dict:
    """Headline numbers of a run, read from the CSV tables its notebooks wrote (None when absent)."""
    figures: dict = {"items": None, "rec_high": None, "rec_medium": None, "rec_low": None, "mean_gain": None, "completion_rate": None}
    items = _read(run_dir, "items.csv")
    if items is not None:
        figures["items"] = int(len(items))
    recs = _read(run_dir, "recommendations.csv")
    if recs is not None and "severity" in recs:
        counts = recs["severity"].astype(str).str.lower().value_counts()
        for level in ("high", "medium", "low"):
            figures[f"rec_{level}"] = int(counts.get(level, 0))
    gains = _read(run_dir, "gains.csv")
    if gains is not None and {"g_avg", "group_variable"} <= set(gains.columns):
        # the whole cohort's average normalised gain, averaged over the modules' tests
        overall = pd.to_numeric(gains.loc[gains["group_variable"].astype(str) == "all", "g_avg"], errors="coerce").dropna()
        figures["mean_gain"] = float(overall.mean()) if len(overall) else None
    funnel = _read(run_dir, "funnel.csv")
    if funnel is not None and "share" in funnel and len(funnel):
        order = funnel.sort_values("position") if "position" in funnel else funnel
        figures["completion_rate"] = float(order["share"].iloc[-1])
    return figures


def write_cohort_index(run_dir: Path, manifest: dict) -> Path:
    tables = sorted(p.name for p in run_dir.glob("*.csv")) + sorted(p.name for p in run_dir.glob("*.json") if p.name != "manifest.json")
    nb_html = {Path(nb["notebook"]).stem + ".html" for nb in manifest.get("notebooks", [])}
    reports = sorted(p.name for p in run_dir.glob("*.html") if p.name not in nb_html and p.name != "index.html")
    html = _env.from_string(_COHORT).render(m=manifest, tables=tables, reports=reports, css=_CSS)
    path = run_dir / "index.html"
    path.write_text(html, encoding="utf-8")
    figures = key_figures(run_dir)
    manifest["key_figures"] = figures
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    return path


def _trend_png(runs: pd.DataFrame) -> str | None:
    """Key figures of each cohort's latest run, cohorts in the order they were run."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    data = runs.dropna(subset=["finished"]).sort_values("finished").drop_duplicates("cohort", keep="last")
    panels = [(c, label) for c, label in (("mean_gain", "Mean normalised gain"), ("completion_rate", "Completion rate"), ("rec_high", "High-severity recommendations")) if data[c].notna().any()]
    if not panels or len(data) < 2:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 2.6), squeeze=False)
    x = range(len(data))
    for ax, (col, label) in zip(axes[0], panels):
        ax.plot(list(x), pd.to_numeric(data[col], errors="coerce"), marker="o", color="#4a6fa5")
        ax.set_xticks(list(x), data["cohort"].astype(str).tolist(), rotation=30, fontsize=8)
        ax.set_title(label, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_reports_index(reports: Path, new_manifest: dict | None = None) -> Path:
    """Append the newest run of each cohort folder to the history and rewrite ``reports/index.html``."""
    history = reports / HISTORY
    known = set()
    rows = []
    if history.is_file():
        for line in history.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append(row)
                known.add((row["cohort"], row["run_id"]))
    with open(history, "a", encoding="utf-8") as fh:
        for manifest_path in sorted(reports.glob("*/manifest.json")):
            m = json.loads(manifest_path.read_text(encoding="utf-8"))
            if m.get("outcome") != "ok" or (m["cohort"], m["run_id"]) in known:
                continue
            row = {"cohort": m["cohort"], "run_id": m["run_id"], "finished": m["finished"], "version": m["package"]["version"], **m.get("key_figures", {})}
            fh.write(json.dumps(row) + "\n")
            rows.append(row)
    runs = pd.DataFrame(rows)
    if runs.empty:
        runs = pd.DataFrame(columns=["cohort", "run_id", "finished", "version", "items", "rec_high", "rec_medium", "rec_low", "mean_gain", "completion_rate"])
    for col in ("items", "rec_high", "rec_medium", "rec_low", "mean_gain", "completion_rate"):
        if col not in runs:
            runs[col] = None
    runs = runs.sort_values("finished", ascending=False)
    trend = _trend_png(runs)
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in runs.to_dict("records")]
    html = _env.from_string(_ALL).render(
        runs=records, css=_CSS, trend=trend,
        trend_alt="Line charts of mean normalised gain, completion rate and high-severity recommendations of each cohort's latest run, cohorts in the order they were run",
    )
    path = reports / "index.html"
    path.write_text(html, encoding="utf-8")
    return path
