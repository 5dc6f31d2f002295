"""Memory: peak resident memory of a k-NN whose test x train similarity matrix would not fit.

A fresh process creates N train x D and M test float32 features, notes its peak resident set
size (``VmHWM``, else ``ru_maxrss``), runs ``knn_predict`` (FAISS, k = 20, queries in
batches of 1024) and notes the peak again. The growth is what the k-NN itself needed
(normalised copies of the features, the index, per-batch results); a dense M x N float32
similarity matrix would need ``4 M N`` bytes. Target: the growth is at most half of that
(it is bounded by the batch size, not by M x N); it applies where the matrix would exceed
1 GiB (not at ``--quick`` sizes).

Usage: ``python bench/bench_memory.py [--quick] [--out DIR]`` (one measurement; --repeats is ignored).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np

from benchlib import Row, bench_main, make_row, run_child

FULL = {"train": 200_000, "test": 5_000, "dim": 384}
QUICK = {"train": 5_000, "test": 500, "dim": 32}
MIB = 2 ** 20
BUDGET = 2 ** 30  # the target applies where the dense matrix would exceed 1 GiB


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes.

    Linux's ``VmHWM`` (/proc/self/status) when available: unlike ``ru_maxrss``, it does not
    carry over the parent's peak into a process started by fork + exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure_child(num_train: int, num_test: int, dim: int) -> None:
    """In the child process: print JSON {before, after (peak bytes), seconds} of one k-NN run."""
    from jepa_eval.protocols.knn import KNNConfig, knn_predict

    rng = np.random.default_rng(0)
    train = rng.standard_normal((num_train, dim), dtype=np.float32)
    test = rng.standard_normal((num_test, dim), dtype=np.float32)
    labels = rng.integers(0, 100, size=num_train)
    before = peak_rss_bytes()
    start = time.perf_counter()
    knn_predict(train, labels, test, KNNConfig(ks=(20,)), 100)
    print(json.dumps({"before": before, "after": peak_rss_bytes(), "seconds": time.perf_counter() - start}))


def run(quick: bool, repeats: int | None) -> list[Row]:
    size = QUICK if quick else FULL
    measured = run_child("bench_memory", f"measure_child({size['train']}, {size['test']}, {size['dim']})")
    growth = measured["after"] - measured["before"]
    dense = 4 * size["train"] * size["test"]
    case = f"{size['train']}x{size['dim']} train vs {size['test']} test"
    return [make_row("memory", case, "k-NN peak RSS growth", "dense M x N float32 matrix", "MiB",
                     growth / MIB, dense / MIB, growth / dense, "<= 0.5" if dense > BUDGET else "", 1,
                     f"peak RSS {measured['after'] / MIB:.0f} MiB in all, {measured['before'] / MIB:.0f} MiB "
                     f"before the k-NN (the features); k-NN took {measured['seconds']:.1f} s")]


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main("memory", run, __doc__, argv)


if __name__ == "__main__":
    main()
