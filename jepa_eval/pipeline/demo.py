"""The README's main command: train a small I-JEPA on the embedded digits set, then evaluate it,
a randomly initialised encoder of the same shape and raw pixels with a suite, and write tables
and plots.

Nothing is downloaded and no GPU is needed; on a 2-core CPU it takes a few minutes.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from jepa_eval.pipeline.monitor import MonitorConfig, monitor_run
from jepa_eval.report.tables import write_report
from jepa_eval.results.record import write_record
from jepa_eval.features.splits import ExtractOptions, ModelSpec
from jepa_eval.pipeline.suite import load_suite, run_suite

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO_ROOT / "configs" / "digits_demo.yaml"


def run_demo(out: Path, *, config_path: Path | None = None, suite_name: str, progress: bool = True,
             log: Callable[[str], Any] = print) -> list[Path]:
    """Train, evaluate the trained encoder, the same encoder freshly initialised and raw pixels,
    monitor the run, write the report; returns the files written."""
    from ijepa.config import load_config
    from ijepa.train import train

    # The demo's models are tiny: one intra-op thread runs them as fast as two, and two threads
    # contending with any other process on a 2-core machine were measured 15x slower.
    torch.set_num_threads(1)
    out = Path(out)
    run_dir, results_dir = out / "run", out / "results"
    for stale in (run_dir, results_dir):
        if stale.exists():
            shutil.rmtree(stale)
    cfg = load_config(config_path or DEMO_CONFIG)
    cfg.logging.folder = str(run_dir)
    log(f"training I-JEPA ({cfg.meta.model_name}, {cfg.optimization.epochs} epochs) on {cfg.run.dataset} -> {run_dir}")
    started = time.perf_counter()
    trained = train(cfg, device="cpu", progress=progress)
    log(f"trained {trained.steps} steps in {time.perf_counter() - started:.0f} s; "
        f"final loss {trained.losses[-1]:.4f}; checkpoint {trained.latest}")

    options = ExtractOptions(device="cpu", cache_dir=str(out / "cache"), progress=progress)
    models = [ModelSpec(ckpt=str(trained.latest), name="I-JEPA (digits)"),
              ModelSpec(ckpt=f"random:{trained.latest}", name="random init"),
              ModelSpec(ckpt=f"pixels:{cfg.data.crop_size}", name="raw pixels")]
    outcome = run_suite(load_suite(suite_name), models, options, results_dir, force=True, log=log)
    for label, reason in outcome.failed:
        log(f"failed {label}: {reason}")

    monitored = monitor_run(run_dir, cfg.run.dataset, MonitorConfig(samples=1437, knn_train=1437, knn_eval=360),
                            options, log=log)
    monitor_path = write_record(monitored, results_dir)
    return [monitor_path, *write_report(results_dir, out, with_published=False)]
