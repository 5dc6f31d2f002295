"""The training loss of each epoch read from the official I-JEPA CSV log and from ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from jepa_eval.pipeline.trainlog import find_log, read_epoch_losses, run_epoch_losses

OFFICIAL_HEADER = "epoch,itr,loss,mask-A,mask-B,time (ms)\n"
OURS_HEADER = "epoch,itr,loss,context_patches,target_patches,lr,wd,momentum,time_ms\n"


def test_official_log_means_each_epoch_and_a_restart_replaces_the_interrupted_epoch(tmp_path: Path) -> None:
    log = tmp_path / "jepa_r0.csv"
    log.write_text(OFFICIAL_HEADER
                   + "1,0,0.50000,150.00000,40.00000,-1\n1,1,0.30000,150.00000,40.00000,-1\n"
                   + "2,0,0.90000,150.00000,40.00000,-1\n"  # epoch 2 interrupted after one iteration
                   + OFFICIAL_HEADER  # the official CSVLogger writes its header again on restart
                   + "2,0,0.20000,150.00000,40.00000,-1\n2,1,0.10000,150.00000,40.00000,-1\n")
    losses = read_epoch_losses(log)
    assert losses.losses == {1: pytest.approx(0.4), 2: pytest.approx(0.15)}
    assert losses.source == log


def test_our_log_means_each_epoch_and_a_resume_that_repeats_steps_replaces_them(tmp_path: Path) -> None:
    log = tmp_path / "jepa_r0.csv"
    log.write_text(OURS_HEADER
                   + "1,1,0.600000,9,12,0.0001,0.05,0.996,10.0\n1,2,0.400000,9,12,0.0001,0.05,0.996,10.0\n"
                   + "2,3,0.700000,9,12,0.0001,0.05,0.996,10.0\n"  # interrupted: resumed from epoch 1, step 2
                   + "2,3,0.300000,9,12,0.0001,0.05,0.996,10.0\n2,4,0.100000,9,12,0.0001,0.05,0.996,10.0\n"
                   + "3,5,nan,9,12,0.0001,0.05,0.996,10.0\n3,6,0.05")  # a non-finite loss and a line cut short
    assert read_epoch_losses(log).losses == {1: pytest.approx(0.5), 2: pytest.approx(0.2), 3: pytest.approx(0.05)}


def test_a_run_folder_without_a_rank_0_log_has_no_losses(tmp_path: Path) -> None:
    (tmp_path / "jepa_r1.csv").write_text(OURS_HEADER + "1,1,0.5,9,12,0,0,0,1\n")
    assert find_log(tmp_path) is None and run_epoch_losses(tmp_path) is None
    (tmp_path / "other.csv").write_text("step,value\n1,2\n")
    (tmp_path / "x_r0.csv").write_text("step,value\n1,2\n")
    assert run_epoch_losses(tmp_path).losses == {}  # a CSV without epoch/itr/loss columns
