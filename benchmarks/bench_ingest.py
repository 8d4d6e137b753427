"""Ingest of a 1,000,000-row DataShop transaction export into the warehouse.

Targets: under 10 s on 2 cores, peak memory under 2 GB. The export is simulated
(research.simulate, written as a real DataShop file); the ingest runs in a fresh child
process so its peak resident memory is measured alone.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S, TARGET_MB = 10.0, 2048
CHILD = """
import sys, time, resource
from research.warehouse import Warehouse
t0 = time.perf_counter()
with Warehouse(sys.argv[2]) as wh:
    s = wh.ingest([sys.argv[1]], cohort="bench")
dt = time.perf_counter() - t0
t = s.files[0].tables["attempts"]
print(f"{dt:.3f} {t.n_read} {t.n_loaded} {s.files[0].tables['attempt_kcs'].n_loaded}")
"""


def main() -> int:
    from research.simulate import simulate_cohort

    os.environ.setdefault("RESEARCH_PSEUDONYM_KEY", "benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sim = simulate_cohort(n_learners=12_000, seed=1, cohort="bench")
        n = len(sim.attempts)
        take = min(n, 1_000_000)
        sim.attempts = sim.attempts.iloc[:take]
        sim.attempt_kcs = sim.attempt_kcs[sim.attempt_kcs["attempt_id"].isin(sim.attempts["attempt_id"])]
        files = sim.write(Path(tmp) / "raw", formats=("datashop",))
        size_mb = Path(files["datashop"]).stat().st_size / 2**20
        print(f"simulated and wrote {take:,} transactions ({size_mb:.0f} MB) in {time.perf_counter() - t0:.0f} s")
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(files["datashop"]), str(Path(tmp) / "w.duckdb")],
            capture_output=True, text=True,
        )
        if proc.returncode:
            print(proc.stderr)
            return 1
        seconds, n_read, n_loaded, n_kcs = proc.stdout.strip().splitlines()[-1].split()
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rows = [
        ("ingest 1M DataShop tx rows (s)", float(seconds), TARGET_S),
        ("peak memory of the ingest (MB)", peak_mb, TARGET_MB),
    ]
    print(f"rows read {int(n_read):,}, attempts loaded {int(n_loaded):,}, KC rows loaded {int(n_kcs):,}")
    print(f"{'figure':<34} | {'measured':>10} | {'target':>8} | ok")
    for name, value, target in rows:
        print(f"{name:<34} | {value:>10.2f} | {target:>8.0f} | {'yes' if value < target else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
