"""Run every benchmark script (benchmarks/bench_*.py) and print its figures against its targets.

Usage: python benchmarks/run.py [NAME ...]   (names without bench_ and .py; default all)

The benchmarks are not tests: they measure, print and compare with the targets, and
exit 0 whatever they find. Timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        wanted = {f"bench_{a.removeprefix('bench_').removesuffix('.py')}.py" for a in argv}
        scripts = [s for s in scripts if s.name in wanted]
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], cwd=HERE.parent)
        print(f"--- {script.name}: {time.perf_counter() - t0:.0f} s wall, exit {proc.returncode}", flush=True)
        if proc.returncode:
            failed.append(script.name)
    if failed:
        print(f"\nbenchmarks that crashed: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
