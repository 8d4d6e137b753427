"""Benchmark of the IRT fits against the targets of issue 3.

Run: .venv/bin/python benchmarks/bench_irt.py [--with-r] [--skip-bayes]

- Rasch by marginal ML on 8,000 learners x 100 items, 30 % missing: target < 1 s of fitting.
- 2PL by marginal ML on the same data: target < 5 s.
- Bayesian Rasch (PyMC; nutpie when installed) on 2,000 x 40: target < 120 s.
- Rasch on complete data (8,000 x 100, no cell missing; the sum-score path) within 3x of girth's
  ``rasch_mml`` (issue 15: girth took 0.07 s on the issue's machine), both timed here, best of 3.
  girth is not a dependency: ``pip install girth`` to get the comparison, else it is skipped.
- With --with-r, the same 8,000 x 100 data fitted by R's eRm::RM (CML) for comparison.

Timings are wall-clock (time.perf_counter) of ``fit`` only (data built beforehand), after
one warm-up fit on a small problem (imports, first-call overhead). Peak memory is the
process's maximum resident set size (resource.getrusage). On a shared, loaded machine the
figures are pessimistic.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-r", action="store_true", help="also time eRm::RM on the same data (needs Rscript)")
    parser.add_argument("--skip-bayes", action="store_true", help="leave out the Bayesian fit")
    args = parser.parse_args()

    from research.bayes import ConvergenceWarning, SamplerSettings, nutpie_available
    from research.estimate.irt import Rasch, TwoPL
    from research.simulate.irt import simulate_2pl, simulate_rasch

    rows = []
    big = simulate_rasch(8000, 100, missing=0.3, seed=1)
    Rasch().fit(simulate_rasch(300, 10, seed=2).responses)  # warm-up
    TwoPL().fit(simulate_2pl(300, 10, seed=2).responses)

    for se in ("crossprod", "hessian"):
        t = time.perf_counter()
        m = Rasch(se=se).fit(big.responses)
        dt = time.perf_counter() - t
        r = np.corrcoef(m.item_params_["difficulty"], big.items["difficulty"])[0, 1]
        rows.append((f"Rasch MML 8000x100 30% missing, se={se} (s)", dt, 1.0, dt < 1.0, f"{m.n_iter_} iter, r={r:.4f}"))

    full = simulate_rasch(8000, 100, missing=0.0, seed=4)
    ours = min(_timed(lambda: Rasch().fit(full.responses)) for _ in range(3))
    m = Rasch().fit(full.responses)
    try:
        import girth
    except ImportError:
        rows.append(("Rasch MML 8000x100 complete data (s)", ours, float("nan"), True, "girth not installed: no comparison"))
    else:
        wide = full.responses.pivot(index="item_id", columns="learner_id", values="correct").to_numpy(int)  # items x learners
        theirs = min(_timed(lambda: girth.rasch_mml(wide)) for _ in range(3))
        g = girth.rasch_mml(wide)["Difficulty"]
        r_g = np.corrcoef(m.item_params_.sort_values("item_id")["difficulty"], g)[0, 1]
        rows.append(("girth rasch_mml 8000x100 complete data (s)", theirs, float("nan"), True, "reference (best of 3)"))
        rows.append(("Rasch MML 8000x100 complete data, whole fit (s)", ours, 3 * theirs, ours < 3 * theirs,
                     f"{ours / theirs:.1f}x girth; r(difficulty, girth)={r_g:.5f}; ML part {m.fit_seconds_:.3f} s"))

    big2 = simulate_2pl(8000, 100, missing=0.3, seed=1)
    t = time.perf_counter()
    m2 = TwoPL(se="crossprod").fit(big2.responses)
    dt = time.perf_counter() - t
    r = np.corrcoef(m2.item_params_["difficulty"], big2.items["difficulty"])[0, 1]
    ra = np.corrcoef(m2.item_params_["discrimination"], big2.items["discrimination"])[0, 1]
    rows.append(("2PL MML 8000x100 30% missing, se=crossprod (s)", dt, 5.0, dt < 5.0, f"{m2.n_iter_} iter, r_b={r:.4f} r_a={ra:.3f}"))

    if not args.skip_bayes:
        mid = simulate_rasch(2000, 40, missing=0.3, seed=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t = time.perf_counter()
            mb = Rasch(method="bayes", sampler=SamplerSettings(draws=500, tune=500, chains=2, seed=1)).fit(mid.responses)
            dt = time.perf_counter() - t
        r = np.corrcoef(mb.item_params_["difficulty"], mid.items["difficulty"])[0, 1]
        backend = mb.idata_.attrs.get("sampler_backend")
        ok = mb.diagnostics_.attrs["ok"]
        rows.append((f"Bayesian Rasch 2000x40, 2x(500+500) {backend} (s)", dt, 120.0, dt < 120.0,
                     f"r={r:.4f}, diagnostics ok={ok}, max R-hat={mb.diagnostics_['r_hat'].max():.3f}"))

    if args.with_r and shutil.which("Rscript"):
        with tempfile.TemporaryDirectory() as tmp:
            wide = big.responses.pivot(index="learner_id", columns="item_id", values="correct")
            path = os.path.join(tmp, "x.csv")
            wide.to_csv(path, index=False, na_rep="NA")
            code = (
                "suppressPackageStartupMessages(library(eRm)); X <- as.matrix(read.csv(commandArgs(TRUE)[1]));"
                "t <- system.time(m <- RM(X)); cat(t[['elapsed']])"
            )
            out = subprocess.run(["Rscript", "-e", code, path], capture_output=True, text=True, check=False)
            try:
                r_time = float(out.stdout.strip().split()[-1])
                rows.append(("R eRm::RM (CML) on the same 8000x100 data (s)", r_time, float("nan"), True, "reference only"))
            except (ValueError, IndexError):
                rows.append(("R eRm::RM (CML) on the same 8000x100 data (s)", float("nan"), float("nan"), True,
                             "failed: " + out.stderr.strip()[-120:]))

    rows.append(("peak resident memory (MB)", peak_mb(), float("nan"), True, "whole process"))
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings on a loaded machine are pessimistic)")
    print(f"nutpie installed: {nutpie_available()}")
    print(f"{'figure':60s} | {'measured':>9s} | {'target':>7s} | ok    | note")
    for name, measured, target, ok, note in rows:
        print(f"{name:60s} | {measured:9.3f} | {target:7.1f} | {str(bool(ok)):5s} | {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
