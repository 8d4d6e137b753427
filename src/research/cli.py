"""The ``research`` command.

Exit codes: 0 success; 1 user error (a message, never a traceback); 2 data rejected in
part (a summary is printed); 3 a notebook failed; 4 a cohort was locked by another run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from research import __version__
from research.errors import ResearchError

__all__ = ["main"]

EPILOG = """exit codes:
  0  success
  1  user error (bad option, missing file, unknown cohort): message printed, no traceback
  2  data rejected in part: the summary lists rejected rows by reason; they are in the quarantine table
  3  a notebook failed (research run): the message names cohort, notebook, cell and error
  4  a cohort was being run by another process and was skipped (research run)
"""


EXAMPLES = """bring your own data (the format is sniffed; --format forces it; --mapping implies csv/parquet):
  research ingest exports/transactions.txt --cohort 2026-spring                 DataShop transaction export
  research ingest exports/student_step.txt --cohort 2026-spring                 DataShop student-step export
  research ingest exports/statements.jsonl --cohort 2026-spring                 xAPI statements
  research ingest examples/data/tests.csv --cohort example --mapping examples/assessments.mapping.yaml
  research ingest examples/data/learners.csv --cohort example --mapping examples/learners.mapping.yaml
  research ingest exports/scores.parquet --cohort 2026-spring --mapping exports/scores.mapping.yaml   Parquet
  research validate examples/data/tests.csv --mapping examples/assessments.mapping.yaml   same counts, nothing loaded
  research cohorts                                                               what the warehouse holds
  research run --cohort 2026-spring                                              notebooks -> reports/2026-spring/
  research forget --cohort 2026-spring [--learner p_0123456789abcdef] --yes      remove data and reports
"""


def _say(quiet: bool):
    return (lambda message: None) if quiet else (lambda message: print(message, flush=True))


def _ingest_options(args) -> dict | None:
    """``--mapping`` and every ``--option KEY=VALUE`` as the adapters' options."""
    options: dict = {}
    for item in getattr(args, "option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ResearchError(f"--option needs KEY=VALUE (for example --option encoding=cp1252), got {item!r}")
        options[key.strip()] = value
    if args.mapping:
        options["mapping"] = args.mapping
    if getattr(args, "profile", None):
        options["profile"] = args.profile
    return options or None


def _format_for(path, args) -> str | None:
    """--format, else csv/parquet when --mapping is given (a mapping only fits those), else sniffed."""
    if args.format:
        return args.format
    if args.mapping:
        return "parquet" if Path(path).suffix.lower() == ".parquet" else "csv"
    return None


def _input_guard(what: str, warehouse=None):
    """Turn any failure while reading input into a message: never a traceback.

    DuckDB failures on the warehouse get the locked/damaged message; a full disk and other
    OS errors say so; anything else names its type only (its text could quote the data).
    """
    import contextlib
    import errno

    @contextlib.contextmanager
    def guard():
        import duckdb

        from research.warehouse import warehouse_error

        try:
            yield
        except ResearchError:
            raise
        except duckdb.Error as exc:
            text = str(exc)
            if isinstance(exc, duckdb.IOException) or "Corrupt" in text or "lock" in text.lower() or warehouse is None:
                raise warehouse_error(warehouse or what, exc) from None
            raise ResearchError(
                f"{what}: could not be loaded (DuckDB {type(exc).__name__}). This is a gap in course-research's input checks; "
                "please report it with a description of the file's layout (not its data)"
            ) from None
        except MemoryError:
            raise ResearchError(f"{what}: ran out of memory; split the file into smaller ones and load them one by one") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise ResearchError(f"{what}: no space left on the device; free some space and run the command again (nothing was half-loaded)") from None
            raise ResearchError(f"{what}: {exc.strerror or type(exc).__name__}" + (f" ({exc.filename})" if exc.filename else "")) from None
        except (RecursionError, ValueError, TypeError, KeyError, IndexError, OverflowError, UnicodeError, ArithmeticError) as exc:
            raise ResearchError(
                f"{what}: could not be read ({type(exc).__name__}). This is a gap in course-research's input checks; "
                "please report it with a description of the file's layout (not its data)"
            ) from None

    return guard()


def cmd_ingest(args) -> int:
    from research.warehouse import LoadSummary
    from research.store import open_warehouse

    from research.names import cohort_name

    cohort_name(args.cohort, what="--cohort")  # before the warehouse is opened: nothing is created for a bad name
    options = _ingest_options(args)
    summary = LoadSummary()
    # concurrent ingests (of different cohorts) into one file queue for the write instead of failing
    # (the file's lock, taken when it is opened); into a store they run in parallel (each locks only its cohort)
    with _input_guard(str(args.warehouse or "the warehouse"), warehouse=args.warehouse or "the default warehouse"):
        wh = open_warehouse(args.warehouse)
    with wh, wh.session(args.cohort, changes=False):  # a store writes the cohort back once, after every file
        for path in args.paths:
            with _input_guard(str(path), warehouse=wh.path):
                summary.files += wh.ingest([path], cohort=args.cohort, format=_format_for(path, args), options=options).files
    print(summary)
    print(f"warehouse: {wh.path}")
    return 2 if summary.n_rejected else 0


def cmd_pull(args) -> int:
    from research.lrs import pull

    result = pull(args.lrs, cohort=args.cohort, warehouse=args.warehouse, profile=args.profile, version=args.xapi_version,
                  since=args.since, limit=args.limit, timeout=args.timeout, progress=_say(args.quiet))
    if not args.quiet:
        print(result)
    return 2 if result.n_rejected else 0


def cmd_validate(args) -> int:
    """Load into a throwaway warehouse, so the counts are exactly those `research ingest` gives."""
    import tempfile

    from research.warehouse import Warehouse

    options = _ingest_options(args)
    rejected = 0
    with tempfile.TemporaryDirectory(prefix="research-validate-") as tmp, Warehouse(Path(tmp) / "validate.duckdb") as wh:
        for path in args.paths:
            with _input_guard(str(path), warehouse=wh.path):
                summary = wh.ingest([path], cohort="validate", format=_format_for(path, args), options=options)
            for f in summary.files:
                print("\n".join(f.lines()).replace(" -> cohort 'validate'", " (validated, nothing loaded)"))
                rejected += f.n_rejected
        q = wh.table("quarantine")
        bad = q[q["kind"] == "rejected"].sort_values(["source_file", "source_line"], kind="stable")
        for (source_file,), rows in bad.groupby(["source_file"], sort=False):
            print(f"{source_file}: first {min(args.show, len(rows)):,} of {len(rows):,} rejected row(s)")
            for r in rows.head(args.show).itertuples(index=False):
                where = ", ".join(x for x in (f"line {r.source_line}" if r.source_line == r.source_line and r.source_line is not None else "", f"column {r.column!r}" if r.column else "") if x)
                print(f"    {where}: {r.reason}")
    return 2 if rejected else 0


def cmd_cohorts(args) -> int:
    from research.store import open_warehouse

    with _input_guard(str(args.warehouse or "the warehouse"), warehouse=args.warehouse or "the default warehouse"):
        wh = open_warehouse(args.warehouse, read_only=True)
    with wh:
        table = wh.cohorts()
    if table.empty:
        print(f"no cohorts in {wh.path}")
        return 0
    print(table.to_string(index=False))
    return 0


def cmd_forget(args) -> int:
    """Remove a cohort, or one learner of it, from the warehouse and its reports; record the removal."""
    import shutil

    from research.paths import DEFAULT_REPORTS, resolve
    from research.pseudonym import Pseudonymiser
    from research.store import open_warehouse

    if args.learner and not Pseudonymiser.looks_pseudonymised(args.learner):
        raise ResearchError(
            f"--learner takes a pseudonym (p_ and 16 hex digits, as in the warehouse), not {'a raw id' if args.learner else 'an empty value'}; "
            "to find a learner's pseudonym from their raw id, use the same key: "
            "python -c \"from research.pseudonym import Pseudonymiser; print(Pseudonymiser().one('RAW_ID'))\""
        )
    with _input_guard(str(args.warehouse or "the warehouse"), warehouse=args.warehouse or "the default warehouse"):
        wh = open_warehouse(args.warehouse)
    dry = not args.yes
    with wh:
        if not wh.has_cohort(args.cohort):
            known = ", ".join(wh.cohorts()["cohort"]) or "none"
            raise ResearchError(f"cohort {args.cohort!r} is not in warehouse {wh.path}; cohorts there: {known}")
        counts = wh.forget_learner(args.cohort, args.learner, dry_run=dry) if args.learner else wh.forget_cohort(args.cohort, dry_run=dry)
        if args.learner and not counts.get("attempts") and not any(counts.get(t) for t in ("assessments", "surveys", "learners")):
            raise ResearchError(f"no learner with pseudonym {args.learner} in cohort {args.cohort!r}; nothing removed")
        root = resolve(args.out or DEFAULT_REPORTS).resolve()
        folders = []
        if root.is_dir() and "/" not in args.cohort and "\\" not in args.cohort and args.cohort not in (".", ".."):
            folders = [p for p in root.iterdir() if p.is_dir() and (p.name == args.cohort or p.name.startswith(f".{args.cohort}.")) and p.resolve().parent == root]
        verb = "would remove" if dry else "removed"
        what = f"learner {args.learner} of cohort {args.cohort!r}" if args.learner else f"cohort {args.cohort!r}"
        print(f"{verb} {what}:")
        for table, n in counts.items():
            if n:
                print(f"  {table}: {n:,} row(s)")
        for folder in folders:
            n_files = sum(1 for p in folder.rglob("*") if p.is_file())
            print(f"  reports: {folder} ({n_files:,} file(s))")
            if not dry:
                shutil.rmtree(folder)
                wh._record_removal("forget learner" if args.learner else "forget cohort", args.cohort, None if args.learner else args.cohort,
                                   {"reports": n_files}, f"report folder {folder.name}")
        if dry:
            print("nothing changed: add --yes to remove it")
        elif args.learner:
            print(f"the cohort's reports held figures that counted this learner and were removed; publish new ones with "
                  f"`research run --cohort {args.cohort}`. Remove the learner from the source exports too, or a corrected "
                  "export loads them again. The removal is recorded in the warehouse table `removals` (no ids).")
        else:
            print("the removal is recorded in the warehouse table `removals`")
    return 0


def _print_results(results, quiet: bool) -> int:
    code = 0
    for r in results:
        if r.status in {"failed", "locked"}:
            print(r.message, file=sys.stderr)
        elif not quiet:
            print(r.message)
        code = max(code, r.exit_code)
    return code


def cmd_migrate(args) -> int:
    """A warehouse file to a Parquet store or back: every table copied, its rows and checksum compared."""
    from research.store import migrate

    report = migrate(args.source, args.target, replace=args.replace)
    print(report.to_string(index=False))
    print(f"{len(report)} tables, {int(report['rows'].sum()):,} rows: equal in {args.target}")
    return 0


def cmd_run(args) -> int:
    from research.cohort_config import config_dir, find_config, load_all
    from research.names import cohort_name
    from research.pipeline import run_one
    from research.schedule import check_jobs

    say = _say(args.quiet)
    options = {"warehouse": args.warehouse, "reports": args.out, "changed_only": args.changed, "progress": say,
               "language": args.language, "keep_failed": args.keep_failed}
    if args.jobs is not None:
        options["jobs"] = check_jobs(args.jobs, where="--jobs")
    parallel = args.scheduler or (args.workers is not None and args.workers != 1)
    if args.workers is not None and args.workers < 1:
        raise ResearchError(f"--workers must be 1 or more, got {args.workers}")
    if parallel and not args.all:
        raise ResearchError("--workers and --scheduler run several cohorts at once: use them with --all")
    if args.scheduler and args.workers is not None:
        raise ResearchError("give --workers N (a local cluster) or --scheduler ADDRESS (a cluster of your own), not both")
    if args.all:
        from research.pipeline import run_all

        configs, broken = load_all(args.config_dir)
        if not configs and not broken:
            raise ResearchError(f"no cohort configurations (*.yaml) in {config_dir(args.config_dir)}; write one per cohort (see README)")
        if parallel:
            from research.cluster import run_parallel

            results = run_parallel(configs, broken=broken, workers=args.workers, scheduler=args.scheduler, **options)
        else:
            results = run_all(configs, broken=broken, **options)
        return _print_results(results, args.quiet)
    if not args.cohort:
        raise ResearchError("say which cohort to run: --cohort NAME, or --all for every configured cohort")
    cohort = cohort_name(args.cohort, what="--cohort")
    cfg = find_config(cohort, args.config_dir)
    result = run_one(cohort, config=cfg, **options)
    return _print_results([result], args.quiet)


def cmd_demo(args) -> int:
    from research.demo import build_demo_cohorts
    from research.pipeline import run_cohort

    say = _say(args.quiet)
    cohorts = build_demo_cohorts(args.warehouse, n_cohorts=args.cohorts, progress=say)
    results = [run_cohort(c, warehouse=args.warehouse, reports=args.out, config=cfg, progress=say) for c, cfg in cohorts]
    code = _print_results(results, args.quiet)
    if code in (0, 2) and not args.quiet:
        from research.paths import resolve

        print(f"open {resolve(args.out or 'reports') / 'index.html'} in a browser")
    return code


def cmd_lab(args) -> int:
    from research.paths import project_root

    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        raise ResearchError("JupyterLab is not installed in this environment; run `make lab` or `pip install -e '.[lab]'`") from None
    os.chdir(project_root())
    os.execv(sys.executable, [sys.executable, "-m", "jupyter", "lab", "notebooks/", *args.lab_args])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="research",
        description="course-research: the OLI improvement loop on course log data.",
        epilog=EXAMPLES + "\n" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"course-research {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wh_help = ("DuckDB warehouse file, or a Parquet store (a folder ending in .store) "
               "(default $RESEARCH_WAREHOUSE or data/warehouse.duckdb)")

    _add_loading_parsers(sub, wh_help)
    _add_warehouse_parsers(sub, wh_help)
    _add_run_parsers(sub, wh_help)
    _add_tool_parsers(sub, wh_help)
    return parser


def _add_loading_parsers(sub, wh_help: str) -> None:
    """ingest, pull, validate."""
    p = sub.add_parser("ingest", help="load raw exports into the warehouse", epilog=EXAMPLES + "\n" + EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="export files (DataShop transaction or student-step, xAPI, CSV/Parquet with a mapping)")
    p.add_argument("--cohort", required=True, help="cohort id to load into")
    p.add_argument("--format", help="force the format instead of sniffing it")
    p.add_argument("--mapping", help="YAML column mapping for CSV/Parquet (default: FILE.mapping.yaml beside the file); implies --format csv (parquet for .parquet)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="adapter option, repeatable: encoding=cp1252, default_time_zone=Europe/Stockholm, module_level=path, time_zone=...")
    p.add_argument("--profile", help="xAPI statement profile: torus, openedx, cmi5, adl or a YAML file (default: sniffed)")
    p.add_argument("--warehouse", help=wh_help)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("pull", help="pull xAPI statements from a Learning Record Store into a cohort", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Credentials come from RESEARCH_LRS_USER / RESEARCH_LRS_PASSWORD or the key file "
                                   "RESEARCH_LRS_KEY_FILE (default ~/.config/course-research/lrs.key, one line user:password), never from the command line. "
                                   "The next pull of the cohort asks only for statements stored since the last one.")
    p.add_argument("--lrs", required=True, metavar="URL", help="the LRS's xAPI endpoint, e.g. https://lrs.example.org/xAPI")
    p.add_argument("--cohort", required=True, help="cohort id to load into")
    p.add_argument("--profile", help="xAPI statement profile: torus, openedx, cmi5, adl or a YAML file (default: sniffed)")
    p.add_argument("--xapi-version", default="1.0.3", choices=["1.0.3", "2.0.0"], help="X-Experience-API-Version header (default 1.0.3)")
    p.add_argument("--since", help="ISO 8601 time: statements stored after it (default: after the last pull of this cohort)")
    p.add_argument("--limit", type=int, default=500, help="statements per page (default 500)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer (default 30)")
    p.add_argument("--warehouse", help=wh_help)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("validate", help="check exports against the canonical schemas without loading them", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--format", help="force the format instead of sniffing it")
    p.add_argument("--mapping", help="YAML column mapping for CSV/Parquet; implies --format csv (parquet for .parquet)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="adapter option, repeatable (as for ingest)")
    p.add_argument("--show", type=int, default=20, help="rejected rows to show per file (default 20)")
    p.set_defaults(func=cmd_validate)


def _add_warehouse_parsers(sub, wh_help: str) -> None:
    """forget, cohorts."""
    p = sub.add_parser("forget", help="remove a cohort, or one learner (erasure request), from the warehouse and reports",
                       description="Removes every row of the cohort (or of one learner, by pseudonym) from every warehouse table, "
                       "quarantine and load records included, and the cohort's report folders; the removal is recorded in the "
                       "warehouse table `removals` without ids. Without --yes it only shows what would be removed.")
    p.add_argument("--cohort", required=True, help="cohort id")
    p.add_argument("--learner", metavar="PSEUDONYM", help="remove only this learner (p_ + 16 hex digits); the cohort's reports are removed too and must be run again")
    p.add_argument("--yes", action="store_true", help="really remove (default: show what would be removed)")
    p.add_argument("--warehouse", help=wh_help)
    p.add_argument("--out", help="reports folder (default reports/)")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("cohorts", help="list the cohorts in the warehouse")
    p.add_argument("--warehouse", help=wh_help)
    p.set_defaults(func=cmd_cohorts)


def _add_run_parsers(sub, wh_help: str) -> None:
    """run, demo."""
    p = sub.add_parser("run", help="run the notebooks for a cohort (or every cohort that changed)", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cohort", help="cohort id")
    p.add_argument("--all", action="store_true", help="every cohort configured in the cohorts folder")
    p.add_argument("--changed", action="store_true", help="skip cohorts whose inputs, configuration, notebooks and package version are unchanged since their last successful run")
    p.add_argument("--config-dir", help="folder of cohort YAML files (default $RESEARCH_COHORTS or cohorts/)")
    p.add_argument("--warehouse", help=wh_help)
    p.add_argument("--out", help="reports folder (default reports/)")
    p.add_argument("--language", choices=("sv", "da", "en"), help="report language, overriding the cohort file's")
    p.add_argument("--keep-failed", type=int, metavar="N", help="failed run folders kept per cohort (default: the cohort file's keep_failed, else 3)")
    p.add_argument("--workers", type=int, metavar="N", help="with --all: run N cohorts at once on a local Dask cluster (N processes); 1 or none: one after another")
    p.add_argument("--scheduler", metavar="ADDRESS", help="with --all: run the cohorts on the Dask cluster whose scheduler is at ADDRESS (tcp://HOST:PORT)")
    p.add_argument("--jobs", metavar="N", help="notebooks of one cohort run at once where they may (items, KC models and gains; same tables "
                   "for any N; default 2 on two cores or more, $RESEARCH_NOTEBOOK_JOBS; 1 per cohort with --workers/--scheduler)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only errors (for cron)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="simulate demo cohorts, ingest them and run every notebook")
    p.add_argument("--cohorts", type=int, default=1, help="how many successive demo cohorts (1 to 3; the later ones follow a course redesign)")
    p.add_argument("--warehouse", help=wh_help)
    p.add_argument("--out", help="reports folder (default reports/)")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_demo)


def _add_tool_parsers(sub, wh_help: str) -> None:
    """migrate, kc-model, lab."""
    p = sub.add_parser("migrate", help="copy a warehouse file to a Parquet store or back, checking every table",
                       description="Copy every table of a warehouse to a new one, a DuckDB file to a Parquet store "
                                   "(a path ending in .store) or back; row counts and checksums are compared per table "
                                   "and printed, and the target is written only when all agree.")
    p.add_argument("--from", dest="source", required=True, metavar="A", help="the warehouse to copy (file or store)")
    p.add_argument("--to", dest="target", required=True, metavar="B", help="the new warehouse: NAME.store for a store, NAME.duckdb for a file")
    p.add_argument("--replace", action="store_true", help="overwrite B if it exists (only after the copy checks equal)")
    p.set_defaults(func=cmd_migrate)

    from research.kcmodel.cli import add_parser as add_kc_model_parser

    add_kc_model_parser(sub, wh_help)

    p = sub.add_parser("lab", help="open JupyterLab on the notebooks with this environment")
    p.add_argument("lab_args", nargs=argparse.REMAINDER, help="further arguments for jupyter lab")
    p.set_defaults(func=cmd_lab)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except ResearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback: a message, and the traceback in a log file
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    from research.faults import is_disk_full, write_traceback

    if is_disk_full(exc):
        where = getattr(exc, "filename", None)
        print(f"error: the disk is full{f' ({where})' if where else ''}. Free some space and run again.", file=sys.stderr)
        return 1
    log = None
    try:
        from research.paths import project_root

        log = write_traceback(project_root() / "data" / "errors", exc, name=f"error-{os.getpid()}.log")
    except Exception:  # noqa: BLE001
        log = None
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    where = f"; the details are in {log}" if log else ""
    print(f"error: unexpected {type(exc).__name__}: {first}{where}. This is a bug; please report it with that file.", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
