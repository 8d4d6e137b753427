"""Are the findings true? Precision and recall of recommendations on simulated cohorts.

Simulates cohorts with planted problems (research.simulate.simulate_cohort: a too-easy
item, a mis-keyed item, a no-learning KC, a DIF item, a drop-out page and a slow page) at
25, 60, 200, 400, 2,000 and 8,000 learners, a few seeds each; computes every estimate
table through the library path a cohort run uses (research.estimates.load_estimates, no
papermill) and the recommendations from them; and judges each finding against the
simulator's truth (research.recommend.accuracy: true, false, or unjudged where the
simulator plants no such problem).

It prints, per size, the precision of all findings and of the findings to fix first,
and the recall of the planted problems (found by any finding, and by one to fix first);
then per rule and size the same counts.

Targets (issue 12): precision of "fix these first" >= 0.9 at every size; recall of
planted problems >= 0.8 from 400 learners.

Usage: .venv/bin/python benchmarks/bench_findings.py [--sizes 25,60,...] [--seeds 3] [--markdown]
(--seeds caps the seeds per size; the two largest sizes run fewer: 2 at 2,000, 1 at 8,000).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import pandas as pd

from research.recommend.accuracy import accuracy_table, cohort_findings, judge_findings
from research.simulate import simulate_cohort

SIZES = (25, 60, 200, 400, 2000, 8000)
TARGET_PRECISION = 0.9
TARGET_RECALL = 0.8
RECALL_FROM = 400


def seeds_for(n: int, cap: int) -> list[int]:
    k = 1 if n >= 8000 else 2 if n >= 2000 else 3
    return list(range(min(k, cap)))


def run(sizes, cap):
    per_rule, recall, timing = [], [], []
    for n in sizes:
        for seed in seeds_for(n, cap):
            t0 = time.perf_counter()
            sim = simulate_cohort(n_learners=n, seed=seed, cohort=f"bench-{n}-{seed}")
            recs, _ = cohort_findings(sim)
            judged = judge_findings(recs, sim.truth)
            rules, found = accuracy_table(judged, sim.truth)
            per_rule.append(rules.assign(size=n, seed=seed))
            recall.append(found.assign(size=n, seed=seed))
            timing.append((n, seed, time.perf_counter() - t0))
            print(f"  {n:>5} learners, seed {seed}: {len(recs)} findings, {int(recs['fix_first'].sum())} to fix first, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return pd.concat(per_rule, ignore_index=True), pd.concat(recall, ignore_index=True)


def _ratio(a, b):
    return a / b if b else float("nan")


def summarise(per_rule: pd.DataFrame, recall: pd.DataFrame):
    overall = per_rule[per_rule["rule"] == "(all)"].groupby("size").sum(numeric_only=True)
    rec = recall.groupby("size")[["found", "found_fix_first"]].mean()
    table = pd.DataFrame({
        "cohorts": per_rule[per_rule["rule"] == "(all)"].groupby("size").size(),
        "findings": overall["n"],
        "precision": [_ratio(t, t + f) for t, f in zip(overall["true"], overall["false"])],
        "fix_first": overall["fix_first_n"],
        "fix_first_precision": [_ratio(t, t + f) for t, f in zip(overall["fix_first_true"], overall["fix_first_false"])],
        "fix_first_unjudged": overall["fix_first_unjudged"],
        "recall": rec["found"],
        "recall_fix_first": rec["found_fix_first"],
    })
    by_rule = per_rule[per_rule["rule"] != "(all)"].groupby(["rule", "size"]).sum(numeric_only=True)
    by_rule["precision"] = [_ratio(t, t + f) for t, f in zip(by_rule["true"], by_rule["false"])]
    by_rule["fix_first_precision"] = [
        _ratio(t, t + f) for t, f in zip(by_rule["fix_first_true"], by_rule["fix_first_false"])]
    by_planted = recall.groupby(["planted", "size"])[["found", "found_fix_first"]].mean().unstack("size")
    return table, by_rule.drop(columns=["seed"]), by_planted


def _markdown(df: pd.DataFrame) -> str:
    df = df.copy()
    if isinstance(df.columns, pd.MultiIndex):
        df.columns = [" ".join(map(str, c)) for c in df.columns]
    index_name = " / ".join(str(n) for n in df.index.names if n) or ""
    df = df.reset_index() if index_name else df

    def cell(v):
        if isinstance(v, float):
            return "–" if v != v else f"{v:.2f}"
        return str(v)

    head = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the README)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    per_rule, recall = run(sizes, args.seeds)
    table, by_rule, by_planted = summarise(per_rule, recall)
    fmt = _markdown if args.markdown else (lambda df: df.to_string(float_format="%.2f"))
    print("\nper size (precision over judged findings; recall of the six planted problems)")
    print(fmt(table))
    print("\nrecall per planted problem (share of cohorts where it was found / found to fix first)")
    print(fmt(by_planted))
    print("\nper rule and size")
    print(fmt(by_rule[["n", "true", "false", "unjudged", "precision", "fix_first_n", "fix_first_true",
                       "fix_first_false", "fix_first_precision"]]))
    ok_p = (table["fix_first_precision"].fillna(1.0) >= TARGET_PRECISION).all()
    big = table[table.index >= RECALL_FROM]
    ok_r = (big["recall"] >= TARGET_RECALL).all() if len(big) else True
    print(f"\ntarget: precision of 'fix these first' >= {TARGET_PRECISION} at every size: {'met' if ok_p else 'NOT met'}")
    print(f"target: recall of planted problems >= {TARGET_RECALL} from {RECALL_FROM} learners: {'met' if ok_r else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
