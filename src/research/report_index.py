"""Index pages: one per cohort run (``reports/COHORT/index.html``) and one across cohorts.

The cohort index links the notebooks' HTML, the course developer's report and the CSV
tables, and shows the run manifest (inputs with their hashes, code version,
environment, timings). ``reports/index.html`` lists every successful run of every
cohort, newest first, with its key figures (items, recommendations by severity, mean
learning gain, completion rate) and a small trend plot, read from ``reports/runs.jsonl``,
a history that each run appends one line to (``outcome`` ``ok``, ``failed`` or
``killed``; a failed run's line carries its reason). Cohorts whose latest run did not
succeed are listed at the top of the index with the reason.

The history is append-only and read tolerantly: a line torn by a kill or a full disk
is skipped (and the next append starts on a new line), so one bad line never stops later
runs from updating the index. Appends and index rewrites happen under a lock on
``reports/.index.lock``, and the index is written to a temporary file and renamed into
place, so a reader never sees half a page. Every link built from a cohort name is a
percent-encoded relative path (:func:`research.names.url_path`).
"""

from __future__ import annotations

import base64
import io
import json
import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import pandas as pd
from jinja2 import Environment, select_autoescape

from research.locks import file_lock
from research.names import url_path

__all__ = ["index_deferred", "key_figures", "read_history", "record_run", "reports_lock", "write_cohort_index", "write_reports_index"]

HISTORY = "runs.jsonl"
LOCK = ".index.lock"

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
{% if reports %}<h2>For course developers</h2><ul>{% for r in reports %}<li><a href="{{ r | url }}">{{ r }}</a></li>{% endfor %}</ul>{% endif %}
<h2>Notebooks</h2>
<table><caption>Notebooks of this run</caption><thead><tr><th scope="col">Notebook</th><th scope="col">Seconds</th><th scope="col">Outcome</th></tr></thead><tbody>
{% for nb in m.notebooks %}<tr><td><a href="{{ nb.notebook | replace('.ipynb', '.html') | url }}">{{ nb.notebook }}</a></td><td>{{ nb.seconds }}</td><td>{{ nb.outcome }}</td></tr>{% endfor %}
</tbody></table>
<h2>Tables</h2><ul>{% for t in tables %}<li><a href="{{ t | url }}">{{ t }}</a></li>{% endfor %}</ul>
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
{% if failures %}<h2>Cohorts whose latest run did not succeed</h2>
<table><caption>Latest run of each cohort that failed, with the reason</caption><thead><tr><th scope="col">Cohort</th><th scope="col">Run</th><th scope="col">Outcome</th><th scope="col">Reason</th><th scope="col">Last good report</th></tr></thead><tbody>
{% for f in failures %}<tr><td>{{ f.cohort }}</td><td>{{ f.finished }}</td><td class="failed">{{ f.outcome }}</td><td>{{ f.reason }}{% if f.failed_dir %} (details: <code>{{ f.failed_dir }}</code>){% endif %}</td>
<td>{% if f.has_report %}<a href="{{ f.link }}">{{ f.cohort }}</a>{% else %}none yet{% endif %}</td></tr>{% endfor %}
</tbody></table>{% endif %}
<p>Every successful run, newest first. Follow a cohort's name to its latest report.</p>
{% if trend %}<h2>Trend</h2><img src="data:image/png;base64,{{ trend }}" alt="{{ trend_alt }}" style="max-width:100%">{% endif %}
<h2>Runs</h2>
<table><caption>Key figures per cohort and run</caption><thead><tr>
<th scope="col">Cohort</th><th scope="col">Run finished</th><th scope="col">Items</th><th scope="col">Recommendations (high / medium / low)</th>
<th scope="col">Mean normalised gain</th><th scope="col">Completion rate</th><th scope="col">Version</th></tr></thead><tbody>
{% for r in runs %}<tr><td>{% if r.link %}<a href="{{ r.link }}">{{ r.cohort }}</a>{% else %}{{ r.cohort }}{% endif %}</td><td>{{ r.finished }}</td><td>{{ r['items'] if r['items'] is not none else '–' }}</td>
<td>{{ r.rec_high if r.rec_high is not none else '–' }} / {{ r.rec_medium if r.rec_medium is not none else '–' }} / {{ r.rec_low if r.rec_low is not none else '–' }}</td>
<td>{{ '%.2f' % r.mean_gain if r.mean_gain is not none else '–' }}</td><td>{{ '%.0f%%' % (100 * r.completion_rate) if r.completion_rate is not none else '–' }}</td><td>{{ r.version }}</td></tr>
{% endfor %}</tbody></table>
</main></body></html>
"""

_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
_env.filters["url"] = lambda value: url_path(str(value))


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
    write_atomic(path, html)
    figures = key_figures(run_dir)
    manifest["key_figures"] = figures
    write_atomic(run_dir / "manifest.json", json.dumps(manifest, indent=2, default=str))
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


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def reports_lock(reports: Path, timeout: float | None = None):
    """An exclusive lock on the reports folder's shared files (history and index); waits for its turn."""
    with file_lock(reports / LOCK, timeout=timeout, what=f"the reports folder {reports}"):
        yield


def read_history(reports: Path) -> tuple[list[dict], int]:
    """The rows of ``reports/runs.jsonl`` and how many lines could not be read (torn by a kill or a full disk)."""
    path = reports / HISTORY
    rows, bad = [], 0
    if not path.is_file():
        return rows, bad
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("cohort"), str) and row.get("run_id"):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def _append(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    text = "".join(json.dumps(r, default=str) + "\n" for r in rows)
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":  # the last append was torn: start on a line of our own
                text = "\n" + text
        fh.seek(0, os.SEEK_END)
        fh.write(text.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


#: True while cohorts run as tasks of a parallel run: they leave the cross-cohort index to one rewrite at the end
_DEFERRED: ContextVar[bool] = ContextVar("research_index_deferred", default=False)


@contextmanager
def index_deferred():
    """Within the block, runs append failures to the history but leave ``reports/index.html`` alone.

    ``research run --all --workers N`` runs each cohort so, and rewrites the index (and
    appends the successful runs to the history) once, with :func:`write_reports_index`,
    when every cohort has finished.
    """
    token = _DEFERRED.set(True)
    try:
        yield
    finally:
        _DEFERRED.reset(token)


def record_run(reports: Path, row: dict) -> None:
    """Append one run (``cohort``, ``run_id``, ``finished``, ``outcome``, ``reason`` ...) to the history and rewrite the index."""
    with reports_lock(reports):
        known = {(r["cohort"], r["run_id"], r.get("outcome", "ok")) for r in read_history(reports)[0]}
        if (row["cohort"], row["run_id"], row.get("outcome", "ok")) not in known:
            _append(reports / HISTORY, [row])
        if not _DEFERRED.get():
            _write_index(reports)


def write_reports_index(reports: Path, new_manifest: dict | None = None) -> Path:
    """Append the newest run of each cohort folder to the history and rewrite ``reports/index.html``."""
    if _DEFERRED.get():
        return reports / "index.html"
    with reports_lock(reports):
        return _write_index(reports)


def _write_index(reports: Path) -> Path:
    rows, _ = read_history(reports)
    known = {(r["cohort"], r["run_id"]) for r in rows if r.get("outcome", "ok") == "ok"}
    new = []
    for manifest_path in sorted(reports.glob("*/manifest.json")):
        try:
            m = json.loads(manifest_path.read_text(encoding="utf-8"))
            if m.get("outcome") != "ok" or (m["cohort"], m["run_id"]) in known:
                continue
            row = {"cohort": m["cohort"], "run_id": m["run_id"], "finished": m["finished"], "outcome": "ok",
                   "version": m["package"]["version"], **m.get("key_figures", {})}
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a manifest that cannot be read is no run to list
        new.append(row)
    _append(reports / HISTORY, new)
    rows += new
    ok = [r for r in rows if r.get("outcome", "ok") == "ok"]
    runs = pd.DataFrame(ok)
    if runs.empty:
        runs = pd.DataFrame(columns=["cohort", "run_id", "finished", "version", "items", "rec_high", "rec_medium", "rec_low", "mean_gain", "completion_rate"])
    for col in ("finished", "version", "items", "rec_high", "rec_medium", "rec_low", "mean_gain", "completion_rate"):
        if col not in runs:
            runs[col] = None
    runs["finished"] = runs["finished"].astype(str)
    runs = runs.sort_values("finished", ascending=False)
    trend = _trend_png(runs)
    records = [{k: (None if not isinstance(v, (list, dict)) and pd.isna(v) else v) for k, v in r.items()} for r in runs.to_dict("records")]
    for r in records:
        r["link"] = url_path(r["cohort"], "index.html") if (reports / str(r["cohort"]) / "manifest.json").is_file() else None
    latest: dict[str, dict] = {}
    for r in sorted(rows, key=lambda r: str(r.get("finished") or "")):
        latest[r["cohort"]] = r
    failures = []
    for cohort, r in sorted(latest.items(), key=lambda kv: str(kv[1].get("finished") or ""), reverse=True):
        if r.get("outcome", "ok") == "ok":
            continue
        has_report = (reports / cohort / "manifest.json").is_file()
        failures.append({**r, "has_report": has_report, "link": url_path(cohort, "index.html")})
    html = _env.from_string(_ALL).render(
        runs=records, failures=failures, css=_CSS, trend=trend,
        trend_alt="Line charts of mean normalised gain, completion rate and high-severity recommendations of each cohort's latest run, cohorts in the order they were run",
    )
    path = reports / "index.html"
    write_atomic(path, html)
    return path
