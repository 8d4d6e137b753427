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

EPILOG = """exit codes:
  0  success
  1  user error (bad option, missing file, unknown cohort): message printed, no traceback
  2  data rejected in part: the summary lists rejected rows by reason; they are in the quarantine table
  3  a notebook failed (research run): the message names cohort, notebook, cell and error
  4  a cohort was being run by another process and was skipped (research run)
"""


def _formats() -> list[str]:
    from research.ingest import FORMATS

    return sorted(FORMATS)


def _say(quiet: bool):
    return (lambda message: None) if quiet else (lambda message: print(message, flush=True))


def cmd_ingest(args) -> int:
    from research.warehouse import Warehouse

    options = {"mapping": args.mapping} if args.mapping else None
    with Warehouse(args.warehouse) as wh:
        summary = wh.ingest(args.paths, cohort=args.cohort, format=args.format, options=options)
    print(summary)
    print(f"warehouse: {wh.path}")
    return 2 if summary.n_rejected else 0


def cmd_validate(args) -> int:
    from research.ingest import read_file
    from research.pseudonym import Pseudonymiser
    from research.schema import validate

    pseudonymiser = Pseudonymiser()
    rejected = 0
    for path in args.paths:
        options = {"mapping": args.mapping} if args.mapping else None
        result = read_file(Path(path), cohort="validate", pseudonymiser=pseudonymiser, format=args.format, options=options)
        print(f"{result.name} ({result.format}): {result.n_read:,} rows read")
        problems = [result.rejects] if len(result.rejects) else []
        for name, frame in result.tables.items():
            checked = validate(frame, name, source_file=result.name)
            print(f"  {name}: {len(checked.valid):,} valid, {len(checked.rejects):,} rejected")
            if len(checked.rejects):
                problems.append(checked.rejects)
        for frame in problems:
            bad = frame[frame["kind"] == "rejected"]
            rejected += len(bad)
            for r in bad.head(args.show).itertuples(index=False):
                where = ", ".join(x for x in (r.source_file, f"line {r.source_line}", f"column {r.column!r}" if r.column else "") if x)
                print(f"    {where}: {r.reason}")
            skipped = int((frame["kind"] == "skipped").sum())
            if skipped:
                print(f"    {skipped:,} row(s) skipped (not attempts)")
    return 2 if rejected else 0


def cmd_cohorts(args) -> int:
    from research.warehouse import Warehouse

    with Warehouse(args.warehouse, read_only=True) as wh:
        table = wh.cohorts()
    if table.empty:
        print(f"no cohorts in {wh.path}")
        return 0
    print(table.to_string(index=False))
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


def cmd_run(args) -> int:
    from research.cohort_config import config_dir, find_config, load_all
    from research.names import cohort_name
    from research.pipeline import run_one

    say = _say(args.quiet)
    options = {"warehouse": args.warehouse, "reports": args.out, "changed_only": args.changed, "progress": say,
               "language": args.language, "keep_failed": args.keep_failed}
    if args.all:
        from research.pipeline import run_all

        configs, broken = load_all(args.config_dir)
        if not configs and not broken:
            raise ResearchError(f"no cohort configurations (*.yaml) in {config_dir(args.config_dir)}; write one per cohort (see README)")
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
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"course-research {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wh_help = "DuckDB warehouse file (default $RESEARCH_WAREHOUSE or data/warehouse.duckdb)"

    p = sub.add_parser("ingest", help="load raw exports into the warehouse", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="export files (DataShop transaction or student-step, xAPI, CSV/Parquet with a mapping)")
    p.add_argument("--cohort", required=True, help="cohort id to load into")
    p.add_argument("--format", help="force the format instead of sniffing it")
    p.add_argument("--mapping", help="YAML column mapping for CSV/Parquet (default: FILE.mapping.yaml beside the file)")
    p.add_argument("--warehouse", help=wh_help)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("validate", help="check exports against the canonical schemas without loading them", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--format", help="force the format instead of sniffing it")
    p.add_argument("--mapping", help="YAML column mapping for CSV/Parquet")
    p.add_argument("--show", type=int, default=20, help="rejected rows to show per file (default 20)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("cohorts", help="list the cohorts in the warehouse")
    p.add_argument("--warehouse", help=wh_help)
    p.set_defaults(func=cmd_cohorts)

    p = sub.add_parser("run", help="run the notebooks for a cohort (or every cohort that changed)", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cohort", help="cohort id")
    p.add_argument("--all", action="store_true", help="every cohort configured in the cohorts folder")
    p.add_argument("--changed", action="store_true", help="skip cohorts whose inputs, configuration, notebooks and package version are unchanged since their last successful run")
    p.add_argument("--config-dir", help="folder of cohort YAML files (default $RESEARCH_COHORTS or cohorts/)")
    p.add_argument("--warehouse", help=wh_help)
    p.add_argument("--out", help="reports folder (default reports/)")
    p.add_argument("--language", choices=("sv", "da", "en"), help="report language, overriding the cohort file's")
    p.add_argument("--keep-failed", type=int, metavar="N", help="failed run folders kept per cohort (default: the cohort file's keep_failed, else 3)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only errors (for cron)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="simulate demo cohorts, ingest them and run every notebook")
    p.add_argument("--cohorts", type=int, default=1, help="how many successive demo cohorts (1 to 3; the later ones follow a course redesign)")
    p.add_argument("--warehouse", help=wh_help)
    p.add_argument("--out", help="reports folder (default reports/)")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("lab", help="open JupyterLab on the notebooks with this environment")
    p.add_argument("lab_args", nargs=argparse.REMAINDER, help="further arguments for jupyter lab")
    p.set_defaults(func=cmd_lab)
    return parser


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
