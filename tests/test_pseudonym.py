"""Keyed-hash pseudonyms (research.pseudonym)."""

from __future__ import annotations

import os
import stat

import pandas as pd

from research.pseudonym import Pseudonymiser, load_key


def test_same_key_same_pseudonym_and_different_key_different():
    a, b = Pseudonymiser(key=b"k1"), Pseudonymiser(key=b"k2")
    assert a.one("Stu_1") == Pseudonymiser(key=b"k1").one("Stu_1")
    assert a.one("Stu_1") != b.one("Stu_1")
    assert a.one("Stu_1") != a.one("Stu_2")
    assert Pseudonymiser.looks_pseudonymised(a.one("Stu_1"))


def test_series_hashes_each_distinct_id_and_keeps_missing():
    p = Pseudonymiser(key=b"k")
    out = p.series(pd.Series(["x", "y", "x", None]))
    assert out[0] == out[2] == p.one("x")
    assert pd.isna(out[3])
    assert "x" not in out.dropna().tolist()


def test_key_file_is_created_once_with_owner_only_permissions(tmp_path, monkeypatch):
    monkeypatch.delenv("RESEARCH_PSEUDONYM_KEY", raising=False)
    key_path = tmp_path / "cfg" / "pseudonym.key"
    monkeypatch.setenv("RESEARCH_PSEUDONYM_KEY_FILE", str(key_path))
    first = load_key()
    assert key_path.exists()
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert load_key() == first and len(first) == 64
