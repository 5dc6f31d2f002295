"""End to end on real photographs: the CIFAR-10 JPEGs of ../shared/data through the CLI."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers_ckpt import make_checkpoint
from jepa_eval.cli.app import app
from jepa_eval.results.record import load_records


def _cifar_subset(archive: Path, root: Path, train_per_class: int, test_per_class: int) -> Path:
    """The first photos of each class in the archive's test/ part, split into train/ and test/."""
    taken: dict[str, int] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) > 1 and parts[1] != "test":
                break
            if not member.isfile() or taken.get(parts[2], 0) >= train_per_class + test_per_class:
                continue
            taken[parts[2]] = taken.get(parts[2], 0) + 1
            split = "train" if taken[parts[2]] <= train_per_class else "test"
            target = root / split / parts[2] / parts[3]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return root


@pytest.mark.shared_data
def test_knn_rank_and_linear_run_on_real_cifar10_photographs(shared_data: Path, tmp_path: Path) -> None:
    data = _cifar_subset(shared_data / "cifar10-jpg.tar.gz", tmp_path / "cifar10", 20, 10)
    ckpt = make_checkpoint("ijepa", tmp_path / "tiny.pth.tar", embed_dim=64, depth=4, num_heads=2,
                           patch_size=8, img_size=32)
    runner = CliRunner()
    common = ["--ckpt", str(ckpt), "--data", "cifar10", "--data-root", str(data), "--results-dir",
              str(tmp_path / "r"), "--cache-dir", str(tmp_path / "cache"), "--quiet", "--device", "cpu"]
    for command in (["knn", "--k", "10,20"], ["linear", "--epochs", "10"], ["rank", "--no-lidar"]):
        result = runner.invoke(app, [*command, *common])
        assert result.exit_code == 0, result.output
    records = {r.protocol: r for r in load_records(tmp_path / "r")}
    assert records["knn"].dataset.n_train == 200 and records["knn"].dataset.n_eval == 100
    assert records["knn"].dataset.num_classes == 10
    assert records["linear"].summary["top1"] > 14  # above chance (10% +- 3 on 100 photos): random ViT features hold colour
    assert records["rank"].summary["rankme"] > 2  # real photographs give features of more than one direction
