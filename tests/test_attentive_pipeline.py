"""``jepa-eval attentive`` like every other protocol: a command whose record holds every probe, a
suite entry, a transfer protocol and a report column; tokens that would not fit are refused with
nothing written; under torchrun two processes give one process's numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers_ckpt import make_checkpoint
from helpers_faults import cache_folders, result_files, run_main, temp_leftovers
from jepa_eval.data import build_dataset
from jepa_eval.features import token_splits
from jepa_eval.results.record import ResultRecord, load_records

SMALL_GRID = ["--epochs", "2", "--lrs", "1e-3,1e-2", "--wds", "1e-3"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An I-JEPA encoder 64 wide, 2 deep, 2 heads, on 16 px digits (patch 4: 16 tokens)."""
    return make_checkpoint("ijepa", tmp_path_factory.mktemp("ckpt") / "tiny.pth.tar", embed_dim=64, depth=2,
                           num_heads=2, patch_size=4, img_size=16)


def attentive(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["attentive", "--ckpt", str(ckpt), "--num-heads", "2", "--data", "digits", *SMALL_GRID, *extra,
            "--results-dir", str(out / "results"), "--cache-dir", str(out / "cache"), "--quiet"]


def only_record(folder: Path) -> ResultRecord:
    (record,) = load_records(folder)
    return record


def test_the_command_records_the_chosen_probe_and_every_probes_score_steps_and_loss(ckpt: Path,
                                                                                    tmp_path: Path) -> None:
    outcome = run_main("jepa-eval", attentive(ckpt, tmp_path))
    assert outcome.code == 0, outcome.stderr
    record = only_record(tmp_path / "results")
    assert (record.protocol, record.protocol_version, record.features.mode) == ("attentive", "1", "tokens")
    assert record.params["variant"] == "vjepa" and record.params["selected_on"] == "val"
    assert record.params["probe_heads"] == 2 and record.params["tokens"] == [16, 64]  # the encoder's heads
    rows = {(m.name, m.coords["lr"]): m.value for m in record.metrics}
    assert sorted(rows) == [("top1", record.summary["chosen_lr"]), ("top5", record.summary["chosen_lr"]),
                            ("train_loss", 1e-3), ("train_loss", 1e-2), ("val_top1", 1e-3), ("val_top1", 1e-2)]
    best = max((1e-3, 1e-2), key=lambda lr: (rows[("val_top1", lr)], -lr))  # ties go to the first
    assert record.summary["chosen_lr"] == best and record.summary["chosen_val_top1"] == rows[("val_top1", best)]
    assert record.summary["chosen_train_loss"] == rows[("train_loss", best)]
    # 1,437 training digits, round(10%) of each class held out (142), 1,295 left: 5 full batches of 256
    held = sum(round(0.1 * n) for n in np.bincount(build_dataset("digits", "train").targets))
    assert (held, record.summary["n_select"], record.summary["n_fit"], record.summary["steps"]) == (142, 142, 1280, 10)
    assert record.dataset.n_train == 1437 and record.dataset.n_eval == 360
    assert "train_loss" in outcome.stdout and "chosen_val_top1" in outcome.stdout

    again = run_main("jepa-eval", attentive(ckpt, tmp_path, "--select-on-eval", "--blocks", "2",
                                            "--block-pooling", "mean"))
    assert again.code == 0, again.stderr
    other = next(r for r in load_records(tmp_path / "results") if r.run_id != record.run_id)
    assert other.features.mode == "tokens2-mean" and other.params["selected_on"] == "eval"
    assert other.summary["chosen_val_top1"] == other.summary["top1"]  # chosen on the evaluation split
    rerun = run_main("jepa-eval", attentive(ckpt, tmp_path))
    assert " ".join(rerun.stderr.split()).count("reused from the feature cache") == 2


def test_attentive_runs_in_suites_and_transfer_and_is_a_report_column(ckpt: Path, tmp_path: Path) -> None:
    from jepa_eval.backbones.spec import ModelSpec
    from jepa_eval.features.splits import ExtractOptions
    from jepa_eval.pipeline.suite import load_suite, run_suite
    from jepa_eval.report.build import write_report

    suite_file = tmp_path / "toy.yaml"
    params = "{epochs: 1, learning_rates: [0.001], weight_decays: [0.001]}"
    suite_file.write_text("suite: toy\nprotocols:\n"
                          f"  - {{protocol: attentive, dataset: digits, modes: [avgpool, avgpool4], params: {params}}}\n"
                          "  - {protocol: transfer, inner: attentive, datasets: [digits], modes: [avgpool, avgpool4], "
                          f"params: {params}}}\n")
    options = ExtractOptions(device="cpu", cache_dir=str(tmp_path / "cache"), progress=False)
    outcome = run_suite(load_suite(suite_file), [ModelSpec(ckpt=str(ckpt), name="tiny", num_heads=2)], options,
                        tmp_path / "out", log=lambda line: None)
    assert outcome.failed == [] and len(outcome.written) == 2  # the modes do not choose tokens: one run each
    transfer = next(r for r in load_records(tmp_path / "out") if r.params.get("transfer"))
    assert transfer.features.candidates == ["tokens"] and transfer.summary["selected_on"] == "val"
    written = write_report(tmp_path / "out", tmp_path / "report")
    table = (tmp_path / "report" / "tables" / "top1.md").read_text()
    assert "attentive digits" in table and "attentive (vjepa): best probe on held-out val" in table
    assert tmp_path / "report" / "plots" / "bars_attentive.png" in written


@pytest.mark.parametrize("cache_off, limit, message", [(False, "free_disk", "would not fit on the disk"),
                                                       (True, "available_memory", "would not fit in memory")])
def test_tokens_that_would_not_fit_are_one_paragraph_and_nothing_is_written(
        ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_off: bool, limit: str,
        message: str) -> None:
    monkeypatch.setattr(token_splits, limit, lambda *folder: 1000)
    outcome = run_main("jepa-eval", attentive(ckpt, tmp_path, *(["--no-cache"] if cache_off else [])))
    assert outcome.code == 2 and "Traceback" not in outcome.stderr
    assert message in outcome.message and "3,694,632 bytes" in outcome.message  # 1,797 digits x 16 x 64 x 2 + labels
    assert result_files(tmp_path / "results") == [] and cache_folders(tmp_path / "cache") == []
    assert temp_leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("augment", ["none", "crop"])
def test_two_torchrun_processes_give_the_numbers_of_one(ckpt: Path, tmp_path: Path, augment: str) -> None:
    """Gloo on two CPU processes: each reads half of every batch (from the token cache both write,
    or through the backbone with seeded augmentation) and the gradients are summed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    launchers = {"two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                         "--master_port", "29533", "-m", "jepa_eval"],
                 "one": [sys.executable, "-m", "jepa_eval"]}
    for name, launcher in launchers.items():
        args = attentive(ckpt, tmp_path / name, "--augment", augment, "--device", "cpu")
        subprocess.run([*launcher, *args], check=True, env=env, capture_output=True, timeout=600)
    two, one = only_record(tmp_path / "two" / "results"), only_record(tmp_path / "one" / "results")
    assert [(m.name, m.coords) for m in two.metrics] == [(m.name, m.coords) for m in one.metrics]
    for ours, alone in zip(two.metrics, one.metrics):
        assert ours.value == pytest.approx(alone.value, rel=1e-4), ours.name
    assert two.summary["steps"] == one.summary["steps"] == 10
