"""``research kc-model export|import|search``: KC-model files and Learning Factors Analysis."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from research.errors import ConfigError

__all__ = ["add_parser"]


def _open(args, read_only: bool):
    from research.store import open_warehouse

    return open_warehouse(args.warehouse, read_only=read_only)


def cmd_export(args) -> int:
    from research.kcmodel.files import export_kc_model

    with _open(args, True) as wh:
        path = export_kc_model(wh, args.cohort, args.model, args.out, format=args.format, replace=args.replace)
    print(f"wrote KC model(s) {', '.join(args.model)} of cohort {args.cohort!r} to {path} ({args.format})")
    return 0


def cmd_import(args) -> int:
    from research.kcmodel.files import import_kc_model

    with _open(args, False) as wh:
        result = import_kc_model(wh, args.cohort, args.path, model=args.model, as_name=args.as_name,
                                 replace=args.replace, allow_unused_steps=args.allow_unused_steps)
    print(result)
    return 0


def cmd_search(args) -> int:
    from research.kcmodel.files import import_kc_model, write_q_matrix
    from research.kcmodel.search import search_cohort
    from research.names import cohort_name, write_csv

    cohort = cohort_name(args.cohort)
    out = Path(args.out) if args.out else Path(f"kc-search-{cohort}.txt")
    table = out.with_name(out.stem + ".kc_search.csv")
    for p in (out, table):
        if p.exists() and not args.replace:
            raise ConfigError(f"{p} exists; choose another --out or overwrite with --replace.")

    def progress(row):
        if not args.quiet:
            print(f"step {row['step']:>3} {row['operator']:<11} BIC {row['bic']:.1f}  CV log-loss "
                  f"{row['cv_log_loss']:.4f}  {row['detail'][:80]}", file=sys.stderr)

    result = search_cohort(cohort, args.from_model, warehouse=args.warehouse, factors=args.factor or None,
                    step_patterns=args.step_pattern or (), budget_s=args.budget_s, max_steps=args.max_steps,
                    seed=args.seed, name=args.as_name or f"{args.from_model} (LFA)", on_step=progress)
    write_csv(result.path, table)
    with _open(args, args.as_name is None) as wh:
        write_q_matrix(wh, cohort, result.best, out, format="qmatrix" if out.suffix == ".csv" else "datashop",
                       replace=True)
        if args.as_name:
            print(import_kc_model(wh, cohort, out, as_name=args.as_name, replace=args.replace))
    print(f"searched {result.n_candidates} candidate KC models ({result.n_full_fits} full AFM fits) in "
          f"{result.seconds:.1f} s; stopped: {result.stopped}")
    chosen = result.path[result.path["chosen"]].iloc[0]
    if result.best_step == 0:
        print(f"no change of {args.from_model!r} is supported by cross-validation")
    else:
        print(f"best: step {result.best_step}, BIC {result.path.loc[0, 'bic']:.1f} -> {chosen['bic']:.1f}, "
              f"CV log-loss {result.path.loc[0, 'cv_log_loss']:.4f} -> {chosen['cv_log_loss']:.4f}")
        for text in result.explanations["text"]:
            print(f"  - {text}")
    print(f"wrote the search path to {table} and the best KC model to {out}")
    return 0


def add_parser(sub, wh_help: str) -> None:
    """Add ``kc-model`` and its subcommands to the ``research`` parser."""
    p = sub.add_parser("kc-model", help="KC-model files (export, import) and Learning Factors Analysis (search)")
    kc = p.add_subparsers(dest="kc_command", metavar="SUBCOMMAND", required=True)

    e = kc.add_parser("export", help="write a cohort's KC model(s) as a KC-model file")
    e.add_argument("--cohort", required=True)
    e.add_argument("--model", required=True, action="append", help="KC model (repeat for several; DataShop format)")
    e.add_argument("--out", required=True, help="file to write")
    e.add_argument("--format", choices=("datashop", "qmatrix"), default="datashop",
                   help="DataShop KC-model format (tab-delimited) or a CSV Q-matrix")
    e.add_argument("--replace", action="store_true", help="overwrite --out when it exists")
    e.add_argument("--warehouse", help=wh_help)
    e.set_defaults(func=cmd_export)

    i = kc.add_parser("import", help="add a KC model from a KC-model file to a cohort")
    i.add_argument("path", help="DataShop KC-model file or CSV Q-matrix (item_id, step_id, kc)")
    i.add_argument("--cohort", required=True)
    i.add_argument("--model", help="the KC model of the file to import (when it holds several)")
    i.add_argument("--as", dest="as_name", help="name of the new KC model in the cohort (default: --model)")
    i.add_argument("--replace", action="store_true", help="replace a KC model of that name")
    i.add_argument("--allow-unused-steps", action="store_true",
                   help="import although the file names steps the cohort lacks (they are listed)")
    i.add_argument("--warehouse", help=wh_help)
    i.set_defaults(func=cmd_import)

    s = kc.add_parser("search", help="Learning Factors Analysis: search for a better KC model")
    s.add_argument("--cohort", required=True)
    s.add_argument("--from", dest="from_model", required=True, help="the KC model to start from")
    s.add_argument("--budget-s", type=float, default=60.0, help="time budget in seconds (default 60)")
    s.add_argument("--max-steps", type=int, default=50, help="step budget (default 50)")
    s.add_argument("--factor", action="append", help="split/add factor: page, module, problem or an items column "
                                                      "(repeat; default page and module)")
    s.add_argument("--step-pattern", action="append", help="regular expression on step names (a yes/no factor)")
    s.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    s.add_argument("--out", help="best KC model file (.csv: Q-matrix; else DataShop format); the search path "
                                 "goes beside it as OUT.kc_search.csv (default kc-search-COHORT.txt)")
    s.add_argument("--as", dest="as_name", help="also import the best model into the cohort under this name")
    s.add_argument("--replace", action="store_true", help="overwrite existing files (and an imported model)")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.add_argument("--warehouse", help=wh_help)
    s.set_defaults(func=cmd_search)
