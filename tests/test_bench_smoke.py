"""The benchmark scripts still run: every bench at its ``--quick`` size gives complete rows,
and ``run_all`` writes the table with its target and met columns.

The two benches that start fresh Python processes (the suite CLI, the trainer script) take
half a minute each even at quick size, so they are marked slow.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
SLOW_BENCHES = ("reuse", "trainer")
ALL_BENCHES = ("knn", "linear", "attentive", "lowshot", "extract", "loader", "memory", *SLOW_BENCHES)


@pytest.fixture()
def run_all(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import run_all

    return run_all


def check_target(ratio: float, target: str) -> bool:
    from benchlib import check_target as rule

    return rule(ratio, target)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BENCHES else n
                                  for n in ALL_BENCHES])
def test_each_bench_runs_at_quick_size_and_returns_measured_rows(run_all, name: str) -> None:
    rows = run_all.BENCHES[name](True, 1)

    assert rows and all(row.bench == name for row in rows)
    assert all(row.ours_value >= 0 and row.baseline_value > 0 and row.ratio >= 0 for row in rows)
    assert all(row.met == check_target(row.ratio, row.target) or "MISSED" in row.notes for row in rows)


def test_run_all_writes_csv_and_markdown_with_target_and_met_columns(run_all, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["run_all.py"])
    rows = run_all.main(["--quick", "--only", "memory", "--out", str(tmp_path)])

    with open(tmp_path / "latest.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows) == 1 and {"target", "met", "ratio"} <= set(table[0])
    text = (tmp_path / "latest.md").read_text()
    assert "command: `run_all.py --quick --only memory" in text and "| met |" in text


@pytest.mark.slow
def test_the_prepared_gpu_check_runs_at_quick_size_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_cuda is run on a lent GPU machine; here its every section runs at tiny size."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    import bench_cuda

    rows = bench_cuda.run(True, 1)
    sections = [row.case.split(",")[0] for row in rows]
    assert sections == ["extraction", "linear --solver sgd", "linear --solver lbfgs", "low-shot C path (23 Cs)",
                        "augmented linear", "trainer step", "trainer step"]
    assert all(row.ours_value > 0 for row in rows) and all("no GPU (cpu)" in row.case for row in rows)
