"""Pull xAPI statements from a Learning Record Store into a cohort (``research pull``).

>>> from research.lrs import pull                                               # doctest: +SKIP
>>> pull("https://lrs.example.org/xAPI", cohort="2026-spring")                  # doctest: +SKIP

The xAPI Statements API (1.0.3 and 2.0): ``GET <endpoint>/statements`` with the header
``X-Experience-API-Version`` (``1.0.3`` by default, ``version="2.0.0"`` for a 2.0 LRS),
following ``more`` links until the last page. Each page is mapped with the xAPI adapter
(:func:`research.ingest.xapi.from_statements`, profile sniffed or named) and loaded in one
transaction, so voiding statements are honoured across pages and pulls (a statement a
later pull voids is removed then) and a page is never half loaded.

Credentials (HTTP Basic) come from ``RESEARCH_LRS_USER`` and ``RESEARCH_LRS_PASSWORD``,
or from a key file (``RESEARCH_LRS_KEY_FILE``, default
``~/.config/course-research/lrs.key``) holding ``user:password`` on one line; never from
the command line, and they are never written to the warehouse, the manifest or a log. A
URL with ``user:password@`` in it is refused.

The newest ``stored`` time seen is kept per cohort and endpoint in the warehouse table
``lrs_state``; the next pull asks for ``since`` that time only. Answers 429 and 5xx, and
connection failures, are retried with exponential back-off (``Retry-After`` honoured);
401/403 and timeouts end with a clear error. Statements are held in memory only: their
raw actor ids never touch the disk.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit, urlunsplit

from research.errors import ConfigError, ResearchError
from research.warehouse import LRS_STATE_SQL as STATE_SQL

__all__ = ["PullResult", "pull", "state"]

VERSIONS = ("1.0.3", "2.0.0")


def _key_file() -> Path:
    return Path(os.environ.get("RESEARCH_LRS_KEY_FILE") or Path.home() / ".config" / "course-research" / "lrs.key").expanduser()


def credentials() -> tuple[str, str]:
    """(user, password) from the environment or the key file; ConfigError saying how to set them."""
    user, password = os.environ.get("RESEARCH_LRS_USER"), os.environ.get("RESEARCH_LRS_PASSWORD")
    if user and password is not None:
        return user, password
    path = _key_file()
    if path.is_file():
        text = path.read_text(encoding="utf-8").strip()
        if ":" not in text:
            raise ConfigError(f"LRS key file {path}: expected one line user:password")
        u, p = text.split(":", 1)
        return u.strip(), p.strip()
    raise ConfigError(
        "no LRS credentials: set RESEARCH_LRS_USER and RESEARCH_LRS_PASSWORD, or write user:password to "
        f"{path} (or the file named by RESEARCH_LRS_KEY_FILE); credentials are never taken from the command line"
    )


def endpoint_of(url: str) -> str:
    """The statements endpoint of an LRS URL, without credentials, query or trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"LRS URL {url!r} must start with http:// or https:// and name a host")
    if parts.username or parts.password:
        raise ConfigError("the LRS URL holds credentials; remove them and set RESEARCH_LRS_USER / RESEARCH_LRS_PASSWORD or the LRS key file")
    path = parts.path.rstrip("/")
    if not path.endswith("/statements"):
        path += "/statements"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass
class PullResult:
    endpoint: str
    cohort: str
    n_statements: int = 0
    n_pages: int = 0
    since: str | None = None
    files: list = field(default_factory=list)  # warehouse FileLoad per page

    @property
    def n_rejected(self) -> int:
        return sum(f.n_rejected for f in self.files)

    def __str__(self) -> str:
        head = (f"pulled {self.n_statements:,} statements in {self.n_pages:,} page(s) from {self.endpoint} into cohort {self.cohort!r}"
                + (f"; next pull asks since {self.since}" if self.since else ""))
        return "\n".join([head] + [line for f in self.files for line in f.lines()])


class _Client:
    def __init__(self, *, version: str, timeout: float, retries: int, backoff: float, auth: tuple[str, str]):
        import requests

        self.requests = requests
        self.session = requests.Session()
        self.session.auth = auth
        self.session.headers.update({"X-Experience-API-Version": version, "Accept": "application/json"})
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def get(self, url: str, params: dict | None = None) -> dict:
        requests = self.requests
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout)
            except requests.Timeout:
                if last:
                    raise ResearchError(f"the LRS at {url} did not answer within {self.timeout:g} s ({self.retries + 1} tries); "
                                        "try again later or raise --timeout") from None
                self._sleep(attempt, None)
                continue
            except requests.ConnectionError as exc:
                if last:
                    raise ResearchError(f"cannot reach the LRS at {url}: {type(exc).__name__} ({self.retries + 1} tries); "
                                        "check the URL and that the LRS is running") from None
                self._sleep(attempt, None)
                continue
            if resp.status_code in (401, 403):
                what = "refused the credentials" if resp.status_code == 401 else "does not allow these credentials to read statements"
                raise ResearchError(f"the LRS at {url} {what} (HTTP {resp.status_code}); check RESEARCH_LRS_USER / RESEARCH_LRS_PASSWORD "
                                    f"or the LRS key file, and that the account may read statements")
            if resp.status_code == 429 or resp.status_code >= 500:
                if last:
                    raise ResearchError(f"the LRS at {url} answered HTTP {resp.status_code} {self.retries + 1} times; try again later")
                self._sleep(attempt, resp.headers.get("Retry-After"))
                continue
            if resp.status_code != 200:
                raise ResearchError(f"the LRS at {url} answered HTTP {resp.status_code}: {resp.text[:200]!r}")
            try:
                doc = resp.json()
            except ValueError:
                raise ResearchError(f"the LRS at {url} answered with something that is not JSON") from None
            if not isinstance(doc, dict) or not isinstance(doc.get("statements"), list):
                raise ResearchError(f"the LRS at {url} answered without a statements list; is this an xAPI statements endpoint?")
            return doc
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, retry_after) -> None:
        delay = self.backoff * (2 ** attempt)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), 60.0))
            except ValueError:
                pass
        time.sleep(delay)


def last_since(con, cohort: str, endpoint: str) -> str | None:
    con.execute(STATE_SQL).fetchall()
    row = con.execute("SELECT since FROM lrs_state WHERE cohort = ? AND endpoint = ? ORDER BY pulled_at DESC LIMIT 1", [cohort, endpoint]).fetchall()
    return row[0][0] if row else None


def pull(url: str, *, cohort: str, warehouse=None, profile: str | None = None, version: str = "1.0.3", since: str | None = None,
         limit: int = 500, timeout: float = 30.0, retries: int = 4, backoff: float = 0.5, pseudonymiser=None,
         progress=None) -> PullResult:
    """Pull the statements stored since the last pull of ``cohort`` from this LRS and load them."""
    from research.ingest import xapi
    from research.pseudonym import Pseudonymiser
    from research.warehouse import Warehouse
    from research.store import open_warehouse

    if version not in VERSIONS:
        raise ConfigError(f"xAPI version {version!r} is not supported; use one of {', '.join(VERSIONS)}")
    if not cohort or not str(cohort).strip():
        raise ConfigError("a cohort name is required (for example --cohort 2026-spring)")
    from research.names import cohort_name

    cohort = cohort_name(cohort, what="--cohort")
    endpoint = endpoint_of(url)
    client = _Client(version=version, timeout=timeout, retries=retries, backoff=backoff, auth=credentials())
    pseudonymiser = pseudonymiser or Pseudonymiser()
    say = progress or (lambda message: None)
    own = not isinstance(warehouse, Warehouse)
    wh = open_warehouse(warehouse) if own else warehouse
    try:
        with wh.session(cohort):  # a store checks the cohort out: the pages and lrs_state are written back together
            since = since or last_since(wh.con, cohort, endpoint)
            result = PullResult(endpoint, cohort, since=since)
            params = {"limit": int(limit), "ascending": "true"}
            if since:
                params["since"] = since
            url_now, newest = endpoint, since
            while url_now:
                doc = client.get(url_now, params)
                statements = doc["statements"]
                result.n_pages += 1
                if statements:
                    result.n_statements += len(statements)
                    stored = [s.get("stored") for s in statements if isinstance(s, dict) and isinstance(s.get("stored"), str)]
                    if stored:
                        newest = max([newest, *stored]) if newest else max(stored)
                    host = urlsplit(endpoint).netloc
                    name = f"lrs {host} page {result.n_pages} since {since or 'start'}"
                    digest = hashlib.sha256("\n".join(sorted(str(s.get("id")) + str(s.get("stored")) for s in statements if isinstance(s, dict))).encode()).hexdigest()
                    seen = wh.con.execute("SELECT count(*) FROM loads WHERE cohort = ? AND file_sha256 = ?", [cohort, digest]).fetchall()[0][0]
                    if seen:  # the same page (ids and stored times) was loaded before: an LRS whose since is inclusive
                        more = doc.get("more")
                        url_now = urljoin(endpoint, more) if isinstance(more, str) and more.strip() else None
                        params = None
                        continue
                    mapped = xapi.from_statements(statements, list(range(1, len(statements) + 1)), [], "array", source=name, cohort=cohort,
                                                  pseudonymiser=pseudonymiser, options={"profile": profile} if profile else None)
                    del statements, doc["statements"]
                    result.files.append(wh.load(mapped, cohort=cohort, file_sha256=digest))
                    say(f"  page {result.n_pages}: {result.files[-1].tables['attempts'].n_loaded if 'attempts' in result.files[-1].tables else 0:,} attempts loaded")
                more = doc.get("more")
                url_now = urljoin(endpoint, more) if isinstance(more, str) and more.strip() else None
                params = None  # the more link carries the query
            if newest:
                wh.con.execute(STATE_SQL).fetchall()
                wh.con.execute("INSERT INTO lrs_state VALUES (?, ?, ?, now(), ?)", [cohort, endpoint, newest, result.n_statements]).fetchall()
            result.since = newest
            return result
    finally:
        if own:
            wh.close()


def state(con) -> list[dict]:
    """What ``lrs_state`` records (cohort, endpoint, since): no credentials are ever in it."""
    con.execute(STATE_SQL).fetchall()
    return [dict(zip(("cohort", "endpoint", "since", "pulled_at", "n_statements"), r)) for r in con.execute("SELECT * FROM lrs_state").fetchall()]
