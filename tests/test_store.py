"""The Parquet store partitioned by cohort: parallel ingests, atomic swaps, pinned readers,
migration without loss, another engine reading it, and `research run` on it."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

import research.store as store
from research.cli import main
from research.demo import _write_exports
from research.errors import ResearchError
from research.simulate import simulate_cohort
from research.store import StoreWarehouse, digests, migrate, partition_name
from research.warehouse import Warehouse
from research.store import open_warehouse

COHORTS = ("2026 spring", "2026-autumn")  # a space: the partition folder is percent-encoded
#: the canonical tables: equal row for row whichever warehouse loaded them (bookkeeping has load ids and times)
CANONICAL = ("attempts", "attempt_kcs", "assessments", "surveys", "learners", "items")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two tiny simulated cohorts, written as the demo's exports (DataShop, assessments, surveys, learners, items)."""
    root = tmp_path_factory.mktemp("store-exports")
    return {c: _write_exports(simulate_cohort(cohort=c, n_learners=24, n_modules=2, seed=i + 3), root / f"c{i}")
            for i, c in enumerate(COHORTS)}


@pytest.fixture(scope="module")
def file_warehouse(exports, tmp_path_factory):
    """Both cohorts ingested one after another into a DuckDB file: the reference."""
    path = tmp_path_factory.mktemp("store-file") / "w.duckdb"
    with Warehouse(path) as wh:
        for cohort, files in exports.items():
            wh.ingest(files, cohort=cohort)
    return path


def _cohort_digests(wh, cohort: str) -> dict:
    """(rows, order-free checksum) of each canonical table's rows of ``cohort``."""
    out = {}
    for t in CANONICAL:
        cols = sorted(r[0] for r in wh.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = 'main'", [t]).fetchall())
        row = "hash(" + ", ".join(f'CAST("{c}" AS VARCHAR)' for c in cols) + ")"
        out[t] = tuple(wh.con.execute(f'SELECT count(*), sum(CAST({row} AS HUGEINT)) FROM "{t}" WHERE cohort = ?', [cohort]).fetchall()[0])
    return out


def _ingest(target: str, cohort: str, files: list) -> None:
    os._exit(main(["ingest", *map(str, files), "--cohort", cohort, "--warehouse", target]))


def test_two_cohorts_ingested_in_parallel_processes_equal_a_serial_ingest_into_a_file(exports, file_warehouse, tmp_path):
    target = tmp_path / "w.store"
    fork = multiprocessing.get_context("fork")  # two processes, as two workers would (fork: no second start-up)
    procs = [fork.Process(target=_ingest, args=(str(target), cohort, files)) for cohort, files in exports.items()]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert (target / "attempts" / f"cohort={partition_name(COHORTS[0])}" / "part-0.parquet").is_file()
    with open_warehouse(target, read_only=True) as s, Warehouse(file_warehouse, read_only=True) as f:
        assert isinstance(s, StoreWarehouse)
        assert s.cohorts()["cohort"].tolist() == sorted(COHORTS)
        for cohort in COHORTS:
            assert _cohort_digests(s, cohort) == _cohort_digests(f, cohort)
            assert s.counts(cohort) == f.counts(cohort)
            cols = ["source_file", "table_name", "n_read", "n_loaded", "n_rejected"]
            pd.testing.assert_frame_equal(s.table("loads", cohort)[cols].sort_values(cols, ignore_index=True),
                                          f.table("loads", cohort)[cols].sort_values(cols, ignore_index=True))
        a, b = s.table("attempts", COHORTS[0]), f.table("attempts", COHORTS[0])
        pd.testing.assert_frame_equal(a.sort_values("attempt_id", ignore_index=True), b.sort_values("attempt_id", ignore_index=True))


@pytest.fixture(scope="module")
def one_store(exports, tmp_path_factory):
    """Both cohorts in a store, ingested in this process (the shared store of the tests below; they copy it to change it)."""
    path = tmp_path_factory.mktemp("store-one") / "w.store"
    with open_warehouse(path) as wh:
        for cohort, files in exports.items():
            wh.ingest(files, cohort=cohort)
    return path


def test_another_engine_reads_the_store_with_no_code_of_ours(one_store):
    with open_warehouse(one_store, read_only=True) as wh:
        ours = wh.table("attempts")
    table = ds.dataset(one_store / "attempts", format="parquet", partitioning="hive").to_table()
    theirs = table.to_pandas()
    assert sorted(theirs["cohort"].unique()) == sorted(COHORTS)  # the folder name decoded to the cohort
    key = ["cohort", "attempt_id"]
    theirs = theirs[ours.columns].sort_values(key, ignore_index=True)
    ours = ours.sort_values(key, ignore_index=True)
    assert len(theirs) == len(ours) > 0
    for col in ours.columns:
        assert ours[col].astype(object).where(ours[col].notna(), None).tolist() == \
            theirs[col].astype(object).where(theirs[col].notna(), None).tolist(), col


def test_migrate_file_to_store_to_file_loses_nothing(file_warehouse, tmp_path, capsys):
    s, back = tmp_path / "m.store", tmp_path / "back.duckdb"
    assert main(["migrate", "--from", str(file_warehouse), "--to", str(s)]) == 0
    out = capsys.readouterr().out
    assert "attempts" in out and "equal in" in out
    migrate(s, back)
    with Warehouse(file_warehouse, read_only=True) as a, Warehouse(back, read_only=True) as b:
        before, after = digests(a), digests(b)
    assert before == after and before["attempts"][0] > 0 and before["loads"][0] > 0
    # an existing target is refused without --replace, and kept as it was
    assert main(["migrate", "--from", str(s), "--to", str(back)]) == 1
    assert "--replace" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if ".migrate-" in p.name]  # no half-built target left


def _copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)  # its links are relative
    return dst


def test_a_failed_swap_leaves_the_previous_partition_and_the_next_ingest_cleans_up(one_store, exports, tmp_path, monkeypatch):
    path = _copy_store(one_store, tmp_path / "k.store")
    cohort = COHORTS[0]
    with open_warehouse(path, read_only=True) as wh:
        before = _cohort_digests(wh, cohort)
    extra = simulate_cohort(cohort=cohort, n_learners=6, n_modules=1, seed=99)
    files = _write_exports(extra, tmp_path / "extra")

    def killed(*args, **kwargs):  # the process dies after writing the new generation, before the swap
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(store, "_publish", killed)
    with pytest.raises(KeyboardInterrupt), open_warehouse(path) as wh:
        wh.ingest(files[:1], cohort=cohort)
    monkeypatch.undo()
    gens = path / "_gen" / partition_name(cohort)
    assert len(list(gens.iterdir())) == 2  # the old generation and the orphan
    with open_warehouse(path, read_only=True) as wh:
        assert _cohort_digests(wh, cohort) == before
    with open_warehouse(path) as wh:  # the next ingest of the cohort removes the orphan, and loads the file
        summary = wh.ingest(files[:1], cohort=cohort)
    assert summary.files[0].status == "loaded"
    assert len(list(gens.iterdir())) == 1
    with open_warehouse(path, read_only=True) as wh:
        assert _cohort_digests(wh, cohort)["attempts"][0] > before["attempts"][0]


def test_a_reader_keeps_its_snapshot_while_the_cohort_is_ingested_again(one_store, tmp_path):
    path = _copy_store(one_store, tmp_path / "r.store")
    cohort = COHORTS[1]
    extra = _write_exports(simulate_cohort(cohort=cohort, n_learners=6, n_modules=1, seed=98), tmp_path / "extra")
    reader = open_warehouse(path, read_only=True)
    n_before = reader.counts(cohort)
    with open_warehouse(path) as writer:  # a second process's ingest (same code path, its own connection)
        writer.ingest(extra, cohort=cohort)
    assert reader.counts(cohort) == n_before  # the old generation, whole, never a mix
    assert len(reader.table("loads", cohort)) < len(open_warehouse(path, read_only=True).table("loads", cohort))
    gens = path / "_gen" / partition_name(cohort)
    assert len(list(gens.iterdir())) == 2  # the pinned generation is kept while the reader reads it
    reader.close()
    assert len(store.collect(path, partition_name(cohort))) == 1
    with open_warehouse(path, read_only=True) as fresh:
        assert fresh.counts(cohort)["attempts"] > n_before["attempts"]


def test_a_store_refuses_a_second_cohort_in_one_session_and_a_read_only_write(one_store):
    with open_warehouse(one_store, read_only=True) as wh, pytest.raises(ResearchError, match="read-only"):
        wh.forget_cohort(COHORTS[0])
    with open_warehouse(one_store) as wh, wh.session(COHORTS[0], changes=False):
        with pytest.raises(ResearchError, match="one cohort at a time"), wh.session(COHORTS[1]):
            pass


def test_research_run_on_a_store_gives_the_tables_of_a_run_on_a_file(exports, file_warehouse, tmp_path):
    """Notebook 01 run by `research run` on a store; the same tables made from the file warehouse in-process
    (the notebook's own calls: one papermill run, not two)."""
    import research.describe as describe
    import research.notebook
    from research.cohort_config import CohortConfig, Source
    from research.pipeline import run_cohort

    notebook = Path(__file__).parents[1] / "notebooks" / "01_ingest_and_validate.ipynb"
    cohort = COHORTS[0]
    config = CohortConfig(cohort=cohort, sources=[Source(Path(f)) for f in exports[cohort]], warehouse=tmp_path / "w.store")
    result = run_cohort(cohort, reports=tmp_path / "reports", config=config, notebooks=[notebook])
    assert result.status == "ok", result.message
    assert isinstance(open_warehouse(tmp_path / "w.store", read_only=True), StoreWarehouse)
    with Warehouse(file_warehouse, read_only=True) as wh:
        assert result.manifest["warehouse"]["row_counts"] == wh.counts(cohort)
    ctx = research.notebook.setup(cohort=cohort, warehouse=file_warehouse, out_dir=tmp_path / "file", min_cell_size=10)
    ctx.write_table(describe.ingest_summary(ctx.data), "ingest_summary")
    ctx.write_table(describe.quarantine_summary(ctx.data), "quarantine_summary")
    for name in ("ingest_summary", "quarantine_summary"):
        theirs = pd.read_csv(next(result.report_dir.rglob(f"{name}.csv")))
        pd.testing.assert_frame_equal(theirs, pd.read_csv(next((tmp_path / "file").rglob(f"{name}.csv"))), obj=name)
    assert len(theirs.columns) and len(pd.read_csv(next(result.report_dir.rglob("ingest_summary.csv"))))


def test_an_ingest_of_a_cohort_being_written_waits_for_its_lock_and_other_cohorts_do_not(one_store, exports, tmp_path, monkeypatch):
    from research.locks import LockedError, file_lock

    path = _copy_store(one_store, tmp_path / "l.store")
    monkeypatch.setenv("RESEARCH_WAREHOUSE_WAIT", "0")
    held, free = COHORTS
    with file_lock(path / "_locks" / f"{partition_name(held)}.lock"), open_warehouse(path) as wh:
        with pytest.raises(LockedError, match=f"cohort '{held}'"):
            wh.ingest(exports[held][:1], cohort=held)
        assert wh.ingest(exports[free][:1], cohort=free).files[0].status == "already loaded"


def test_forget_on_a_store_writes_a_generation_only_when_it_removes(one_store, tmp_path):
    path = _copy_store(one_store, tmp_path / "f.store")
    cohort = COHORTS[0]
    gens = path / "_gen" / partition_name(cohort)
    first = sorted(gens.iterdir())
    with open_warehouse(path) as wh:
        counts = wh.forget_cohort(cohort, dry_run=True)
        assert counts["attempts"] > 0 and sorted(gens.iterdir()) == first  # a dry run changes nothing
        wh.forget_cohort(cohort)
        assert not wh.has_cohort(cohort) and wh.has_cohort(COHORTS[1])
        assert set(wh.removals(cohort)["action"]) == {"forget cohort"}
    assert sorted(gens.iterdir()) != first


def test_a_damaged_file_in_a_store_is_named(one_store, tmp_path):
    path = _copy_store(one_store, tmp_path / "d.store")
    part = path / "attempts" / f"cohort={partition_name(COHORTS[1])}" / "part-0.parquet"
    real = part.resolve()
    real.write_bytes(real.read_bytes()[:100])
    with pytest.raises(ResearchError, match=r"could not be read .*damaged") as err:
        open_warehouse(path, read_only=True)
    assert str(real) in str(err.value)


def test_files_loaded_before_are_skipped_without_reading_the_cohort_in(one_store, exports, tmp_path, monkeypatch):
    path = _copy_store(one_store, tmp_path / "s.store")
    cohort = COHORTS[0]

    def no_checkout(self, cohort):
        raise AssertionError("the cohort was read in")

    monkeypatch.setattr(StoreWarehouse, "_checkout", no_checkout)
    with open_warehouse(path) as wh, wh.session(cohort, changes=False):  # as `research ingest` and `research run` do
        summary = wh.ingest(exports[cohort], cohort=cohort)
    assert [f.status for f in summary.files] == ["already loaded"] * len(exports[cohort])
    assert len(list((path / "_gen" / partition_name(cohort)).iterdir())) == 1


def test_a_store_another_process_is_making_is_joined_and_a_foreign_folder_is_refused(tmp_path):
    """Two first ingests into one new store race to make it: the second may find its folders
    before its marker, and must go on, not refuse the store as a foreign folder."""
    from research.store import MARKER, create_store

    half = tmp_path / "half.store"
    for sub in ("_current", "_gen", "_locks"):  # the first process made the folders, not yet the marker
        (half / sub).mkdir(parents=True)
    create_store(half)
    create_store(half)
    assert (half / MARKER).is_file() and not list(half.glob(f".{MARKER}.*"))
    foreign = tmp_path / "foreign"
    (foreign / "_current").mkdir(parents=True)
    (foreign / "notes.txt").write_text("not a store")
    with pytest.raises(ResearchError, match="no store.json"):
        create_store(foreign)
    assert not (foreign / MARKER).exists()
