"""Run every benchmark, write ``bench/results/latest.{csv,md}`` and print each ratio against its target.

Benches (each also runnable alone): k-NN (bench_knn), linear probe (bench_linear), attentive
probe (bench_attentive: a grid of 16 against one, cached tokens against the backbone in the
loop), low-shot logistic regression (bench_lowshot), feature reuse of a suite (bench_reuse),
extraction throughput (bench_extract), the JPEG pipeline against the backbone (bench_loader),
peak memory of a large k-NN (bench_memory) and the I-JEPA trainer step against the official one
(bench_trainer: speed and peak memory). ``latest.md``
starts with the hardware, the load average before and after, the exact command and the total
time.

Usage: ``python bench/run_all.py [--quick] [--repeats R] [--out DIR] [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bench_attentive
import bench_extract
import bench_knn
import bench_linear
import bench_loader
import bench_lowshot
import bench_memory
import bench_reuse
import bench_trainer
from benchlib import RESULTS_DIR, Row, hardware, print_ratios, write_tables

BENCHES: dict[str, Callable[[bool, int | None], list[Row]]] = {
    "knn": bench_knn.run,
    "linear": bench_linear.run,
    "attentive": bench_attentive.run,
    "lowshot": bench_lowshot.run,
    "reuse": bench_reuse.run,
    "extract": bench_extract.run,
    "loader": bench_loader.run,
    "memory": bench_memory.run,
    "trainer": bench_trainer.run,
}


def header(command: str, load_before: tuple[float, ...], seconds: float) -> str:
    info = hardware()
    load_after = os.getloadavg()
    lines = ["# jepa-eval benchmarks", "", f"command: `{command}`", "",
             *[f"- {key}: {value}" for key, value in info.items()],
             f"- load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; "
             f"after: {', '.join(f'{v:.2f}' for v in load_after)}",
             f"- total wall time: {seconds:.0f} s", "",
             "Ratios compare candidates timed in the same process, interleaved, median over "
             "`repeats` after a warm-up; 'met' says whether the ratio meets its target.", "", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds): for smoke tests")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default: per bench)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for latest.csv and latest.md")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=list(BENCHES),
                        help="run only these benches")
    args = parser.parse_args(argv)
    command = " ".join([Path(sys.executable).name, *sys.argv] if argv is None else ["run_all.py", *argv])
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows: list[Row] = []
    for name in args.only:
        print(f"== {name}", flush=True)
        bench_rows = BENCHES[name](args.quick, args.repeats)
        print_ratios(bench_rows)
        rows += bench_rows
    write_tables(rows, args.out, "latest", header(command, load_before, time.perf_counter() - start))
    missed = [row for row in rows if not row.met]
    print(f"{len(rows) - len(missed)} of {len(rows)} targets met; table in {args.out / 'latest.md'}")
    return rows


if __name__ == "__main__":
    main()
