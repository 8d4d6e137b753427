"""`research kc-model export|import|search` on a small simulated cohort."""

from __future__ import annotations

import pandas as pd
import pytest

from research.cli import main
from research.kcmodel.files import read_kc_model_file, step_kcs
from research.names import restore_csv
from research.simulate import simulate_cohort
from research.warehouse import Warehouse


@pytest.fixture(scope="module")
def small_wh(tmp_path_factory):
    home = tmp_path_factory.mktemp("kccli")
    sim = simulate_cohort(n_learners=120, seed=5, cohort="small", planted=False)
    files = sim.write(home / "exports", formats=("datashop",))
    wh_path = home / "wh.duckdb"
    with Warehouse(wh_path) as wh:
        wh.ingest([files["datashop"], files["items"]], cohort="small")
    return home, wh_path


def test_cli_search_writes_path_and_best_model_and_imports_it(small_wh, capsys):
    home, wh = small_wh
    out = home / "best.txt"
    rc = main(["kc-model", "search", "--cohort", "small", "--from", "Coarse", "--max-steps", "3", "--budget-s", "20",
               "--out", str(out), "--as", "Coarse LFA", "--warehouse", str(wh), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "candidate KC models" in text
    path = restore_csv(pd.read_csv(out.with_name("best.kc_search.csv")))
    assert {"step", "operator", "kcs", "bic", "aic", "cv_rmse", "cv_log_loss", "fit_seconds"} <= set(path.columns)
    assert read_kc_model_file(out).model_names() == ["Coarse LFA"]
    with Warehouse(wh, read_only=True) as w:
        assert "Coarse LFA" in set(step_kcs(w.con, "small")["kc_model"])
    # nothing is overwritten without --replace
    rc = main(["kc-model", "search", "--cohort", "small", "--from", "Coarse", "--out", str(out), "--warehouse", str(wh)])
    assert rc == 1 and "exists" in capsys.readouterr().err


def test_cli_export_import_and_their_errors(small_wh, capsys):
    home, wh = small_wh
    q = home / "fine.csv"
    assert main(["kc-model", "export", "--cohort", "small", "--model", "Fine", "--format", "qmatrix",
                 "--out", str(q), "--warehouse", str(wh)]) == 0
    assert main(["kc-model", "import", str(q), "--cohort", "small", "--warehouse", str(wh)]) == 1
    assert "already has a KC model 'Fine'" in capsys.readouterr().err
    assert main(["kc-model", "import", str(q), "--cohort", "small", "--as", "Fine again", "--warehouse", str(wh)]) == 0
    with Warehouse(wh, read_only=True) as w:
        k = step_kcs(w.con, "small")
    per = lambda m: k[k["kc_model"] == m].groupby(["item_id", "step_id"])["kc"].apply(sorted).to_dict()  # noqa: E731
    assert per("Fine again") == per("Fine")
    assert main(["kc-model", "export", "--cohort", "small", "--model", "Nope", "--out", str(home / "x.txt"),
                 "--warehouse", str(wh)]) == 1
    assert "has no KC model 'Nope'" in capsys.readouterr().err


@pytest.mark.parametrize("sub", ["export", "import", "search"])
def test_kc_model_subcommands_have_help(sub, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["kc-model", sub, "--help"])
    assert exit_.value.code == 0 and f"usage: research kc-model {sub}" in capsys.readouterr().out


def test_cli_search_from_an_unknown_model_is_a_user_error(small_wh, capsys):
    home, wh = small_wh
    rc = main(["kc-model", "search", "--cohort", "small", "--from", "Nope", "--out", str(home / "n.txt"),
               "--warehouse", str(wh)])
    assert rc == 1 and "has no KC model 'Nope'; its KC models are ['Coarse'" in capsys.readouterr().err


def test_a_cohort_file_adopts_a_kc_model_file(small_wh, tmp_path):
    from research.cohort_config import parse
    from research.errors import ConfigError
    from research.pipeline import ingest_sources

    home, wh = small_wh
    q = home / "adopted.csv"
    main(["kc-model", "export", "--cohort", "small", "--model", "Fine", "--format", "qmatrix", "--out", str(q),
          "--warehouse", str(wh), "--replace"])
    cfg = parse({"cohort": "small", "kc_model": {"name": "Adopted", "file": str(q)}}, path=tmp_path / "small.yaml")
    assert cfg.kc_model == "Adopted" and cfg.kc_model_file == q
    ingest_sources(cfg, wh)
    ingest_sources(cfg, wh)  # again: the file's model replaces the earlier import
    with Warehouse(wh, read_only=True) as w:
        k = step_kcs(w.con, "small")
    per = lambda m: k[k["kc_model"] == m].groupby(["item_id", "step_id"])["kc"].apply(sorted).to_dict()  # noqa: E731
    assert per("Adopted") == per("Fine")
    with pytest.raises(ConfigError, match=r"kc_model must be a KC model name, or a mapping \{name: NAME, file: PATH\}"):
        parse({"cohort": "small", "kc_model": {"file": str(q), "colour": "red"}}, path=tmp_path / "small.yaml")


def test_run_changed_notices_a_changed_kc_model_file(small_wh, tmp_path):
    """`research run --changed`: the fingerprint holds the adopted KC-model file's content."""
    import yaml

    from research.cohort_config import parse
    from research.pipeline import fingerprint

    home, wh = small_wh
    q = tmp_path / "adopted.csv"
    main(["kc-model", "export", "--cohort", "small", "--model", "Fine", "--format", "qmatrix", "--out", str(q),
          "--warehouse", str(wh)])
    doc = {"cohort": "small", "kc_model": {"name": "Adopted", "file": str(q)}}
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    cfg = parse(doc, path=tmp_path / "small.yaml")
    before = fingerprint("small", [], cfg, [])
    assert fingerprint("small", [], cfg, []) == before
    text = q.read_text(encoding="utf-8").splitlines()
    text[1] = text[1].rsplit(",", 1)[0] + ",Another KC"  # one step to another KC; the cohort file is unchanged
    q.write_text("\n".join(text) + "\n", encoding="utf-8")
    assert fingerprint("small", [], cfg, []) != before
