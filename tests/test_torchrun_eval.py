"""``torchrun`` evaluation: two CPU processes share the extraction; rank 0 alone writes the result,
and its numbers equal a single process's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_ckpt import make_checkpoint
from helpers_data import make_imagefolder
from jepa_eval.results.record import load_records


@pytest.mark.slow
def test_two_process_knn_writes_one_result_equal_to_a_single_process(tmp_path: Path) -> None:
    ckpt = make_checkpoint("ijepa", tmp_path / "tiny.pth.tar", embed_dim=64, depth=2, num_heads=2,
                           patch_size=8, img_size=32)
    data = make_imagefolder(tmp_path / "data", ["a", "b", "c"], n_per_class=5, splits=("train", "val"), size=32)
    args = ["knn", "--ckpt", str(ckpt), "--data", f"imagefolder:{data}", "--k", "1,3", "--quiet",
            "--device", "cpu", "--no-cache"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
                    "-m", "jepa_eval", *args, "--results-dir", str(tmp_path / "two")],
                   check=True, env=env, capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "jepa_eval", *args, "--results-dir", str(tmp_path / "one")],
                   check=True, env=env, capture_output=True, timeout=300)
    (two,) = load_records(tmp_path / "two")
    (one,) = load_records(tmp_path / "one")
    assert two.metrics == one.metrics and two.dataset.n_train == 15
