"""`research pull` against a real Learning Record Store: ralph (PyPI ralph-malph[cli,lrs]),
started here on 127.0.0.1 with its file-system backend, credentials written by `ralph auth -w`.

Ralph's fs backend writes a statements file once (a second POST to the same target fails),
so statements that "arrive later" are appended to that file as ralph writes it (with
`stored`); ralph then serves them like any other. Its `since` filter compares statement
timestamps, so the statements here carry current timestamps.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from research.errors import ResearchError
from research.warehouse import Warehouse

requests = pytest.importorskip("requests")

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "research", "s3cret-pass-word"
EXT = "http://oli.cmu.edu/extensions/"
NS = uuid.UUID("6a0f3c1e-6a9b-4c55-9d7d-0f0f7a1b2c3d")
T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)


def _ralph() -> str | None:
    for cand in (os.environ.get("RESEARCH_RALPH"), shutil.which("ralph"), str(Path(sys.executable).parent / "ralph"), str(ROOT / ".venv-ralph" / "bin" / "ralph")):
        if cand and Path(cand).is_file():
            return cand
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lrs(tmp_path_factory):
    exe = _ralph()
    if exe is None:
        if os.environ.get("RESEARCH_REQUIRE_LRS") == "1":
            pytest.fail("ralph is not installed and RESEARCH_REQUIRE_LRS=1 (pip install 'ralph-malph[cli,lrs]')")
        pytest.skip("ralph is not installed (pip install 'ralph-malph[cli,lrs]', or set RESEARCH_RALPH)")
    home = tmp_path_factory.mktemp("ralph")
    env = {**os.environ, "RALPH_APP_DIR": str(home / "app"), "RALPH_RUNSERVER_BACKEND": "fs", "HOME": str(home)}
    subprocess.run([exe, "auth", "-u", USER, "-p", PASSWORD, "-s", "all", "-M", "mailto:lrs-admin.secret@example.org", "-w"],
                   env=env, cwd=home, check=True, capture_output=True, timeout=120)
    port = _free_port()
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([exe, "runserver", "-b", "fs", "-h", "127.0.0.1", "-p", str(port), "--fs-default-directory-path", str(home / "fs")],
                            env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/xAPI"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(url + "/statements", auth=(USER, PASSWORD), timeout=2,
                                headers={"X-Experience-API-Version": "1.0.3"}).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("ralph did not start: " + (home / "server.log").read_text()[-2000:])
            time.sleep(0.5)
        first = [torus(i, learner=i % 5, correct=i % 3 != 0, at=T0 + timedelta(seconds=i)) for i in range(23)]
        resp = requests.post(url + "/statements", json=first, auth=(USER, PASSWORD), headers={"X-Experience-API-Version": "1.0.3"}, timeout=30)
        assert resp.status_code == 200, resp.text
        yield {"url": url, "file": home / "fs" / "fs_lrs.jsonl", "port": port, "first": first}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()


@pytest.fixture
def creds(monkeypatch, tmp_path):
    monkeypatch.setenv("RESEARCH_LRS_USER", USER)
    monkeypatch.setenv("RESEARCH_LRS_PASSWORD", PASSWORD)
    monkeypatch.setenv("RESEARCH_LRS_KEY_FILE", str(tmp_path / "no-such.key"))


def torus(i: int, *, learner: int, correct: bool, at: datetime) -> dict:
    """A part attempt shaped as Torus sends it (with IRIs ralph's validation accepts)."""
    return {
        "id": str(uuid.uuid5(NS, f"s{i}")),
        "actor": {"objectType": "Agent", "account": {"homePage": "https://proton.oli.cmu.edu", "name": f"learner.secret.{learner}"}},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/completed", "display": {"en-US": "completed"}},
        "object": {"id": f"https://proton.oli.cmu.edu/part_attempt/{uuid.uuid5(NS, f'p{i}')}", "objectType": "Activity",
                   "definition": {"type": "http://adlnet.gov/expapi/activities/question"}},
        "context": {"extensions": {EXT + "activity_id": 100 + i % 4, EXT + "part_id": "1", EXT + "attached_objectives": [7 + i % 2]}},
        "result": {"score": {"raw": 1 if correct else 0, "max": 1, "min": 0, "scaled": 1.0 if correct else 0.0}, "success": True},
        "timestamp": at.isoformat().replace("+00:00", "Z"),
    }


def _append_later(lrs, statements: list[dict]) -> None:
    """Statements stored later: appended to ralph's store as ralph itself writes them."""
    with open(lrs["file"], "a", encoding="utf-8") as fh:
        for s in statements:
            stored = datetime.now(timezone.utc).isoformat()
            fh.write(json.dumps({**s, "stored": stored, "authority": {"mbox": "mailto:lrs-admin.secret@example.org", "objectType": "Agent"}}) + "\n")


def _scan(*blobs) -> None:
    text = "\n".join(b if isinstance(b, str) else b.decode("latin-1") for b in blobs)
    for raw in ("learner.secret", "lrs-admin.secret", PASSWORD):
        assert raw not in text, f"{raw!r} leaked"


def test_pull_pages_since_voiding_and_incremental(lrs, creds, tmp_path):
    from research.lrs import pull, state

    first = lrs["first"]
    wh_path = tmp_path / "w.duckdb"
    r1 = pull(lrs["url"], cohort="c", warehouse=wh_path, limit=5)
    assert r1.n_statements == 23 and r1.n_pages >= 5, "five pages of five (more links followed)"
    with Warehouse(wh_path) as wh:
        att = wh.table("attempts", "c")
        assert len(att) == 23 and set(att["attempt_id"]) == {s["id"] for s in first}
        assert (att["outcome"] == "correct").sum() == sum(1 for i in range(23) if i % 3 != 0)
        assert set(wh.table("attempt_kcs", "c")["kc_model"]) == {"Objectives"}
        n_loads = wh.con.execute("SELECT count(*) FROM loads").fetchall()[0][0]
        since1 = state(wh.con)[0]["since"]
    assert "xAPI profile: torus (sniffed" in str(r1)
    # the same statements from a file give the same attempts
    from research.ingest import read_file
    from research.pseudonym import Pseudonymiser

    f = tmp_path / "same.json"
    f.write_text(json.dumps(first), encoding="utf-8")
    same = read_file(f, cohort="c", pseudonymiser=Pseudonymiser()).tables["attempts"]
    cols = ["attempt_id", "learner_id", "item_id", "outcome", "timestamp"]
    assert same.sort_values("attempt_id")[cols].reset_index(drop=True).equals(att.sort_values("attempt_id")[cols].reset_index(drop=True))

    r2 = pull(lrs["url"], cohort="c", warehouse=wh_path, limit=5)  # nothing new
    assert r2.n_statements == 0
    with Warehouse(wh_path) as wh:
        assert wh.con.execute("SELECT count(*) FROM loads").fetchall()[0][0] == n_loads

    # later: a voiding statement for statement 3 and one new answer
    time.sleep(0.1)  # ralph filters since on timestamps: these come after the first batch was stored, before they are
    now = datetime.now(timezone.utc) - timedelta(milliseconds=50)
    void = {"id": str(uuid.uuid5(NS, "void-3")), "actor": {"mbox": "mailto:lrs-admin.secret@example.org"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/voided", "display": {"en-US": "voided"}},
            "object": {"objectType": "StatementRef", "id": first[3]["id"]}, "timestamp": now.isoformat().replace("+00:00", "Z")}
    _append_later(lrs, [void, torus(99, learner=1, correct=True, at=now + timedelta(milliseconds=1))])
    r3 = pull(lrs["url"], cohort="c", warehouse=wh_path, limit=5)
    assert r3.n_statements == 2, "incremental: only what was stored since the last pull"
    with Warehouse(wh_path) as wh:
        att = wh.table("attempts", "c")
        assert len(att) == 23 and first[3]["id"] not in set(att["attempt_id"]) and str(uuid.uuid5(NS, "s99")) in set(att["attempt_id"])
        audit = wh.con.execute("SELECT statement_id, voided_by FROM voided").fetchall()
        assert audit == [(first[3]["id"], void["id"])]
        st = state(wh.con)
        assert st[-1]["since"] > since1 and all(PASSWORD not in json.dumps(s, default=str) for s in st)
        q = wh.table("quarantine", "c")
        dump = q.to_csv() + wh.table("loads").to_csv()
    _scan(dump, str(r1), str(r3), wh_path.read_bytes())


def test_xapi_2_0_header(lrs, creds, tmp_path):
    from research.lrs import pull

    r = pull(lrs["url"], cohort="v2", warehouse=tmp_path / "w.duckdb", version="2.0.0")
    assert r.n_statements >= 23


def test_cli_errors_are_messages_not_tracebacks(lrs, tmp_path, monkeypatch, capsys):
    from research.cli import main

    monkeypatch.setenv("RESEARCH_LRS_KEY_FILE", str(tmp_path / "lrs.key"))
    monkeypatch.delenv("RESEARCH_LRS_USER", raising=False)
    monkeypatch.delenv("RESEARCH_LRS_PASSWORD", raising=False)
    wh = str(tmp_path / "w.duckdb")
    assert main(["pull", "--lrs", lrs["url"], "--cohort", "c", "--warehouse", wh]) == 1
    err = capsys.readouterr().err
    assert "no LRS credentials: set RESEARCH_LRS_USER" in err and "Traceback" not in err
    (tmp_path / "lrs.key").write_text(f"{USER}:wrong-password\n", encoding="utf-8")
    assert main(["pull", "--lrs", lrs["url"], "--cohort", "c", "--warehouse", wh]) == 1
    out = capsys.readouterr()
    assert "refused the credentials (HTTP 401)" in out.err and "Traceback" not in out.err
    (tmp_path / "lrs.key").write_text(f"{USER}:{PASSWORD}\n", encoding="utf-8")
    assert main(["pull", "--lrs", lrs["url"], "--cohort", "c", "--warehouse", wh, "--quiet"]) == 0
    bad_url = lrs["url"].replace("http://", f"http://{USER}:{PASSWORD}@")
    assert main(["pull", "--lrs", bad_url, "--cohort", "c", "--warehouse", wh]) == 1
    out = capsys.readouterr()
    assert "the LRS URL holds credentials" in out.err
    _scan(out.out, out.err.replace(bad_url, ""), Path(wh).read_bytes())


def test_timeout_is_a_clear_error(creds, tmp_path):
    from research.lrs import pull

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        t = time.monotonic()
        with pytest.raises(ResearchError, match=r"did not answer within 0.3 s \(2 tries\)"):
            pull(f"http://127.0.0.1:{silent.getsockname()[1]}/xAPI", cohort="c", warehouse=tmp_path / "w.duckdb", timeout=0.3, retries=1, backoff=0.01)
        assert time.monotonic() - t < 10
    finally:
        silent.close()


def test_retries_429_and_5xx_with_backoff(lrs, creds, tmp_path):
    """A flaky gateway in front of the real LRS: 429 (Retry-After) then 503, then it passes requests through."""
    from research.lrs import pull

    answers = [(429, {"Retry-After": "0"}), (503, {})]
    seen = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            if answers:
                code, headers = answers.pop(0)
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                return
            up = requests.get(f"http://127.0.0.1:{lrs['port']}{self.path}", headers={k: v for k, v in self.headers.items() if k.lower() != "host"}, timeout=30)
            self.send_response(up.status_code)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(up.content)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = pull(f"http://127.0.0.1:{server.server_address[1]}/xAPI", cohort="c", warehouse=tmp_path / "w.duckdb", backoff=0.05)
        assert r.n_statements >= 23 and len(seen) >= 3
    finally:
        server.shutdown()


def test_cohort_yaml_lrs_source_is_pulled_before_a_run(lrs, creds, tmp_path):
    from research.cohort_config import load_config
    from research.pipeline import ingest_sources

    cfg_path = tmp_path / "spring.yaml"
    cfg_path.write_text(f"cohort: spring\nsources:\n  - lrs: {lrs['url']}\n    options: {{profile: torus}}\n", encoding="utf-8")
    cfg = load_config(cfg_path)
    assert cfg.sources[0].lrs == lrs["url"]
    summary = ingest_sources(cfg, tmp_path / "w.duckdb")
    with Warehouse(tmp_path / "w.duckdb") as wh:
        assert len(wh.table("attempts", "spring")) >= 23
    again = ingest_sources(cfg, tmp_path / "w.duckdb")
    assert again.files == [] and summary.files
