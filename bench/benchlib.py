"""Shared parts of the benchmarks: interleaved timing, result rows, tables, hardware facts.

Every bench module exposes ``run(quick: bool, repeats: int | None) -> list[Row]`` and a
``main`` built with :func:`bench_main`, so it runs alone (``python bench/bench_knn.py
--quick``) or from ``bench/run_all.py``. Times are wall-clock seconds; each compared
candidate is timed in the same process, interleaved (A B A B ...), after one warm-up call
each, and the median over repeats is kept, so machine noise hits both sides alike.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path

from jepa_eval.core.atomic import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One comparison: ``ours`` against ``baseline``; ``ratio`` is oriented so larger is better
    for us where ``higher_is_better`` (a speed-up), else it is ours / baseline (a cost ratio).

    ``ours_value``/``baseline_value`` are in ``unit`` (s, img/s, MiB...); ``met`` is whether
    ``ratio`` meets ``target`` (e.g. '>= 1.5' or '<= 2.0'); ``notes`` say what limits a miss.
    """

    bench: str
    case: str
    ours: str
    baseline: str
    unit: str
    ours_value: float
    baseline_value: float
    ratio: float
    target: str
    met: bool
    repeats: int
    notes: str = ""


def check_target(ratio: float, target: str) -> bool:
    """Whether ``ratio`` satisfies ``target`` ('>= X', '<= X' or '' for no target)."""
    if not target:
        return True
    op, value = target.split()
    return ratio >= float(value) if op == ">=" else ratio <= float(value)


def make_row(bench: str, case: str, ours: str, baseline: str, unit: str, ours_value: float,
             baseline_value: float, ratio: float, target: str, repeats: int, notes: str = "",
             miss_note: str = "", also_required: bool = True) -> Row:
    """A :class:`Row` whose ``met`` is ``ratio`` meeting ``target`` and ``also_required``.

    ``miss_note`` (what limits us) is appended to ``notes`` only when the target is missed.
    """
    met = check_target(ratio, target) and also_required
    if not met and miss_note:
        notes = f"{notes}; MISSED: {miss_note}" if notes else f"MISSED: {miss_note}"
    return Row(bench, case, ours, baseline, unit, float(ours_value), float(baseline_value),
               float(ratio), target, met, repeats, notes)


def time_call(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call of ``fn``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved_medians(candidates: dict[str, Callable[[], object]], repeats: int,
                        warmups: dict[str, Callable[[], object]] | None = None,
                        ) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each candidate over ``repeats`` interleaved rounds, and its last result.

    ``warmups`` (default: the candidates themselves) are each called once first; pass cheaper
    calls of the same code (e.g. on a slice of the data) when a full call is long.
    """
    for fn in (warmups or candidates).values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    last: dict[str, object] = {}
    for _ in range(max(1, repeats)):
        for name, fn in candidates.items():
            elapsed, last[name] = time_call(fn)
            seconds[name].append(elapsed)
    return {name: statistics.median(values) for name, values in seconds.items()}, last


def run_child(module: str, call: str) -> dict[str, object]:
    """Run ``module.call`` (a Python call expression) in a fresh interpreter with ``bench/`` and
    the repository on its path, and return the JSON object of its last printed line."""
    bench_dir = Path(__file__).resolve().parent
    code = (f"import sys; sys.path[:0] = [{str(bench_dir)!r}, {str(bench_dir.parent)!r}]; "
            f"import {module}; {module}.{call}")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def hardware() -> dict[str, str]:
    """CPU model and cores, accelerator, thread count and the versions that matter here."""
    import torch

    versions = {}
    for package in ("torch", "faiss-cpu", "scikit-learn", "numpy", "timm"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": _lscpu_model(), "cores": str(os.cpu_count()), "torch threads": str(torch.get_num_threads()),
            "gpu": gpu, "python": platform.python_version(),
            **{name: version for name, version in versions.items()}}


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table: case, both measures, the ratio, its target and whether met."""
    head = ["bench", "case", "ours", "baseline", "unit", "ours value", "baseline value", "ratio",
            "target", "met", "repeats", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in asdict(row).values()) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([f.name for f in fields(Row)])
    for row in rows:
        writer.writerow(list(asdict(row).values()))
    return buffer.getvalue()


def write_tables(rows: Sequence[Row], out_dir: Path, name: str, header: str = "") -> tuple[Path, Path]:
    """Write ``OUT/NAME.csv`` and ``OUT/NAME.md`` (``header`` then the table) atomically."""
    csv_path = atomic_write_text(out_dir / f"{name}.csv", csv_text(rows))
    md_path = atomic_write_text(out_dir / f"{name}.md", header + markdown_table(rows))
    return csv_path, md_path


def print_ratios(rows: Sequence[Row]) -> None:
    """One line per row: the ratio, its target and whether it was met."""
    for row in rows:
        verdict = "met" if row.met else "MISSED"
        target = f"target {row.target}, {verdict}" if row.target else "no target"
        print(f"{row.bench:>10} | {row.case:<38} ratio {row.ratio:8.3f} ({target})"
              + (f"  {row.notes}" if row.notes and not row.met else ""), flush=True)


def bench_main(name: str, run: Callable[[bool, int | None], list[Row]], doc: str | None,
               argv: Sequence[str] | None = None) -> list[Row]:
    """Parse ``--quick``/``--repeats``/``--out``, run one bench, print and write its table."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds): for smoke tests")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default: per bench)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for NAME.csv and NAME.md")
    args = parser.parse_args(argv)
    rows = run(args.quick, args.repeats)
    print_ratios(rows)
    write_tables(rows, args.out, name, header=f"# bench {name}\n\ncommand: `{' '.join(sys.argv)}`\n\n")
    return rows
