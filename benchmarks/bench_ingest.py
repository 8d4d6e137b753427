"""Ingest of a 1,000,000-row DataShop transaction export into the warehouse.

Targets: under 10 s on 2 cores, peak memory under 2 GB (issue 2); issue 15 tightens them to
5 s and 1.5 GB. The export is simulated (research.simulate, written as a real DataShop file);
each ingest runs in a fresh child process so its peak resident memory is measured alone,
and its CPU seconds (all threads) are printed beside the wall time, which a shared machine inflates.
Each file is ingested three times into a new warehouse; the median time and the highest peak
are compared with the targets.
The same file is ingested a second time with every fourth row turned into an event that
is not an attempt (blank Outcome): those 250,000 rows go to quarantine as ``skipped``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S, TARGET_MB = 10.0, 2048
TARGET15_S, TARGET15_MB = 5.0, 1536
REPEATS = 3
CHILD = """
import sys, time
from research.warehouse import Warehouse
load = Warehouse.load
marks = []
def timed_load(self, *args, **kwargs):  # where the adapter ends and DuckDB's checks and inserts begin
    marks.append(time.process_time())
    return load(self, *args, **kwargs)
Warehouse.load = timed_load
t0, c0 = time.perf_counter(), time.process_time()
with Warehouse(sys.argv[2]) as wh:
    s = wh.ingest([sys.argv[1]], cohort="bench")
dt, cpu = time.perf_counter() - t0, time.process_time() - c0
cpu_read = marks[0] - c0
t = s.files[0].tables["attempts"]
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so it would report the parent's peak
with open("/proc/self/status") as fh:
    peak = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
print(f"{dt:.3f} {t.n_read} {t.n_loaded} {s.files[0].tables['attempt_kcs'].n_loaded} {peak:.1f} {cpu:.3f} {cpu_read:.3f}")
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
        skips = Path(tmp) / "raw" / "datashop_tx_with_skips.txt"
        with open(files["datashop"], encoding="utf-8") as src, open(skips, "w", encoding="utf-8") as dst:
            header = src.readline()
            dst.write(header)
            cols = header.rstrip("\n").split("\t")
            at = cols.index("Outcome")
            for i, text in enumerate(src, start=1):
                if i % 4 == 0:
                    fields = text.rstrip("\n").split("\t")
                    fields[at] = ""
                    text = "\t".join(fields) + "\n"
                dst.write(text)
        os.sync()  # the files just written are on disk: their write-back does not run during the ingests
        results = []
        for label, path in (("", files["datashop"]), (", 1/4 skipped", skips)):
            runs = []
            for k in range(REPEATS):  # a fresh warehouse each time; the median run is reported
                proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(Path(tmp) / f"w{len(results)}-{k}.duckdb")],
                                      capture_output=True, text=True)
                if proc.returncode:
                    print(proc.stderr)
                    return 1
                runs.append(proc.stdout.strip().splitlines()[-1].split())
                Path(tmp, f"w{len(results)}-{k}.duckdb").unlink()
                os.sync()
            runs.sort(key=lambda r: float(r[0]))
            seconds, n_read, n_loaded, n_kcs, peak_mb, cpu, cpu_read = runs[len(runs) // 2]
            print(f"{path.name}: rows read {int(n_read):,}, attempts loaded {int(n_loaded):,}, KC rows loaded {int(n_kcs):,}, "
                  f"CPU {float(cpu):.2f} s (all threads; reading and the adapter {float(cpu_read):.2f} s, "
                  f"DuckDB's checks and inserts {float(cpu) - float(cpu_read):.2f} s); "
                  f"{REPEATS} runs: {', '.join(f'{float(r[0]):.2f}' for r in runs)} s")
            results += [(f"ingest 1M DataShop tx rows{label} (s)", float(seconds)),
                         (f"peak memory of the ingest{label} (MB)", max(float(r[4]) for r in runs))]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (timings are pessimistic when it is high)")
    print(f"{'figure':<46} | {'measured':>9} | {'target':>6} | ok | {'issue 15':>8} | ok")
    for name, value in results:
        t, t15 = (TARGET_S, TARGET15_S) if name.endswith("(s)") else (TARGET_MB, TARGET15_MB)
        print(f"{name:<46} | {value:>9.2f} | {t:>6.0f} | {'yes' if value < t else 'NO':<2} | {t15:>8.0f} | {'yes' if value < t15 else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
