"""Pseudonymisation of learner ids with a keyed hash (HMAC-SHA256).

The key comes from ``$RESEARCH_PSEUDONYM_KEY`` when set, else from a key file
(``$RESEARCH_PSEUDONYM_KEY_FILE``, default ``~/.config/course-research/pseudonym.key``)
that is created on first use with owner-only permissions. The same key gives the
same pseudonym for the same raw id in every cohort, so learners can be followed
across cohorts without anyone seeing who they are. Raw ids never leave the adapter
that read them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Pseudonymiser", "key_file", "load_key"]

PREFIX = "p_"
HEX_CHARS = 16


def key_file() -> Path:
    """Where the key is kept: ``RESEARCH_PSEUDONYM_KEY_FILE``, else ~/.config/course-research/pseudonym.key."""
    env = os.environ.get("RESEARCH_PSEUDONYM_KEY_FILE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "course-research" / "pseudonym.key"


def load_key() -> bytes:
    """The pseudonymisation key: from the environment, else the key file (created when missing)."""
    env = os.environ.get("RESEARCH_PSEUDONYM_KEY")
    if env:
        return env.encode("utf-8")
    path = key_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


class Pseudonymiser:
    """Maps raw learner ids to stable pseudonyms ``p_<16 hex>``.

    >>> Pseudonymiser(key=b"k").one("Stu_1")
    'p_...'  # doctest: +SKIP
    """

    def __init__(self, key: bytes | None = None):
        self._key = key if key is not None else load_key()

    def one(self, raw: str) -> str:
        digest = hmac.new(self._key, str(raw).encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest[:HEX_CHARS]

    def _many(self, values, prefix: str, domain: bytes = b"") -> list[str]:
        """``prefix`` + HMAC-SHA256(key, domain + value) of each value, 16 hex digits: the same digests as
        :meth:`one`, from one keyed state copied per value (the key's pads are not derived anew each time)."""
        base = hmac.new(self._key, domain, hashlib.sha256)
        out = []
        for v in values:
            h = base.copy()
            h.update(str(v).encode("utf-8"))
            out.append(prefix + h.hexdigest()[:HEX_CHARS])
        return out

    def _column(self, raw: pd.Series, prefix: str, domain: bytes = b"") -> pd.Series:
        """Pseudonymise a column in Arrow: each distinct value is hashed once, then taken by its
        dictionary code (no Python object per row); missing stays missing."""
        arr = pa.array(raw.astype(pd.StringDtype("pyarrow")).array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        enc = pc.dictionary_encode(arr)
        mapped = pa.array(self._many(enc.dictionary.to_pylist(), prefix, domain), pa.large_string())
        return pd.Series(pd.arrays.ArrowStringArray(pc.take(mapped, enc.indices)), index=raw.index)

    def series(self, raw: pd.Series) -> pd.Series:
        """Pseudonymise a column; each distinct id is hashed once."""
        return self._column(raw, PREFIX)

    def sessions(self, raw: pd.Series) -> pd.Series:
        """Pseudonymise session ids (``s_<16 hex>``): a session id can carry or reveal who the learner is.

        Keyed like learner ids but in their own domain, so a session never hashes to a learner's pseudonym.
        """
        return self._column(raw, "s_", b"session\x1f")

    def fingerprint(self) -> str:
        """A fingerprint of the key (HMAC-SHA256 of a fixed text, 16 hex digits): tells keys apart, reveals nothing."""
        return hmac.new(self._key, b"course-research pseudonym key fingerprint v1", hashlib.sha256).hexdigest()[:HEX_CHARS]

    @staticmethod
    def looks_pseudonymised(value: str) -> bool:
        return isinstance(value, str) and value.startswith(PREFIX) and len(value) == len(PREFIX) + HEX_CHARS
