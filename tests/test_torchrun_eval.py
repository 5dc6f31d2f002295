"""``torchrun`` evaluation: two CPU processes share the extraction; rank 0 alone writes the result,
its numbers equal a single process's, and the gathered features are in dataset order row by row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers_ckpt import make_checkpoint
from helpers_data import class_color, write_image
from jepa_eval.results.record import load_records


def images_that_differ_within_each_class(root: Path, per_class: int = 5) -> Path:
    """``root/{train,val}/<class>/``: each image its class colour shifted by its own index, so that
    two images of one class never give the same feature and a misordered gather shows."""
    for split in ("train", "val"):
        for label, name in enumerate(["a", "b", "c"]):
            for i in range(per_class):
                colour = [min(255, c + 12 * i) for c in class_color(label)]
                write_image(root / split / name / f"{name}_{i}.png", colour, size=32)
    return root


@pytest.mark.slow
def test_two_processes_write_one_result_equal_to_a_single_process_and_gather_in_order(tmp_path: Path) -> None:
    ckpt = make_checkpoint("ijepa", tmp_path / "tiny.pth.tar", embed_dim=64, depth=2, num_heads=2,
                           patch_size=8, img_size=32)
    data = f"imagefolder:{images_that_differ_within_each_class(tmp_path / 'data')}"
    common = ["--ckpt", str(ckpt), "--data", data, "--quiet", "--device", "cpu", "--no-cache"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
                "-m", "jepa_eval"]
    single = [sys.executable, "-m", "jepa_eval"]
    for launcher, name in ((torchrun, "two"), (single, "one")):
        subprocess.run([*launcher, "knn", *common, "--k", "1,3", "--results-dir", str(tmp_path / name)],
                       check=True, env=env, capture_output=True, timeout=300)
        subprocess.run([*launcher, "features", *common, "--split", "train", "--out", str(tmp_path / f"{name}.npy")],
                       check=True, env=env, capture_output=True, timeout=300)
    (two,) = load_records(tmp_path / "two")
    (one,) = load_records(tmp_path / "one")
    assert two.metrics == one.metrics and two.dataset.n_train == 15
    gathered, alone = np.load(tmp_path / "two.npy"), np.load(tmp_path / "one.npy")
    assert len(np.unique(alone.round(4), axis=0)) == 15  # every row differs, within classes too
    np.testing.assert_allclose(gathered, alone, atol=1e-5)
    assert (np.load(tmp_path / "two.labels.npy") == np.load(tmp_path / "one.labels.npy")).all()
