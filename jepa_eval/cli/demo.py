"""``jepa-eval demo`` (the README's main command): train a small I-JEPA on the embedded digits set
with the bundled trainer, then evaluate it, a randomly initialised encoder of the same shape and raw
pixels with a suite, follow the run with the monitor, and write tables and plots.

The trainer runs as a child process (``python -m ijepa train``), exactly as a user runs it, so the
evaluator never imports the trainer. Nothing is downloaded and no GPU is needed; on a 2-core CPU it
takes a few minutes.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import torch
import typer
import yaml

from jepa_eval.cli import options as c
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.features.splits import ExtractOptions
from jepa_eval.pipeline.monitor import monitor_run
from jepa_eval.protocols.monitor import MonitorConfig
from jepa_eval.pipeline.suite import load_suite, resolve_suite, run_suite
from jepa_eval.report.build import write_report
from jepa_eval.results.record import write_record

DEMO_CONFIG = "digits_demo"
TRAINER_CONFIG_FILE = "params-ijepa.yaml"  # the resolved config the trainer writes beside its checkpoints


def train_in_child(config: str, run_dir: Path, *, progress: bool) -> None:
    """``python -m ijepa train --config CONFIG`` writing into ``run_dir``, with one torch thread
    (the demo's models are tiny: one intra-op thread runs them as fast as two, and two threads
    contending with any other process on a 2-core machine were measured 15x slower)."""
    command = [sys.executable, "-m", "ijepa", "train", "--config", config, "--device", "cpu",
               "--set", f"logging.folder={run_dir}", *([] if progress else ["--quiet"])]
    finished = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if finished.returncode != 0:
        raise JepaEvalError("the demo's training run failed",
                            expected="ijepa train to exit with status 0",
                            found=f"exit status {finished.returncode} from {' '.join(command)}")


def last_logged_step(run_dir: Path, tag: str) -> tuple[int, float]:
    """(steps, loss) of the last row of the trainer's per-iteration log ``{tag}_r0.csv``."""
    with open(run_dir / f"{tag}_r0.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return int(rows[-1]["itr"]), float(rows[-1]["loss"])


def run_demo(out: Path, *, config: str = DEMO_CONFIG, suite_name: str = "cpu-quick", progress: bool = True,
             log=print) -> list[Path]:
    """Train, evaluate the trained encoder, the same encoder freshly initialised and raw pixels,
    monitor the run, write the report; returns the files written."""
    torch.set_num_threads(1)
    out = Path(out)
    run_dir, results_dir = out / "run", out / "results"
    for stale in (run_dir, results_dir):
        if stale.exists():
            shutil.rmtree(stale)
    log(f"training I-JEPA ({config}) -> {run_dir}")
    started = time.perf_counter()
    train_in_child(config, run_dir, progress=progress)
    trained = yaml.safe_load((run_dir / TRAINER_CONFIG_FILE).read_text())
    tag = trained["logging"]["write_tag"]
    steps, loss = last_logged_step(run_dir, tag)
    latest = run_dir / f"{tag}-latest.pth.tar"
    log(f"trained {steps} steps in {time.perf_counter() - started:.0f} s; final loss {loss:.4f}; checkpoint {latest}")

    options = ExtractOptions(device="cpu", cache_dir=str(out / "cache"), progress=progress)
    models = [ModelSpec(ckpt=str(latest), name="I-JEPA (digits)"),
              ModelSpec(ckpt=f"random:{latest}", name="random init"),
              ModelSpec(ckpt=f"pixels:{trained['data']['crop_size']}", name="raw pixels")]
    outcome = run_suite(load_suite(resolve_suite(suite_name)), models, options, results_dir, force=True, log=log)
    for label, reason in outcome.failed:
        log(f"failed {label}: {reason}")
    monitored = monitor_run(run_dir, trained["run"]["dataset"], MonitorConfig(samples=1437, knn_train=1437, knn_eval=360),
                            options, log=log)
    monitor_path = write_record(monitored, results_dir)
    return [monitor_path, *write_report(results_dir, out, with_published=False)]


def demo(out: Annotated[Path, typer.Option("--out", help="Where the demo's run, results, tables and plots go.")] = Path("results/demo"),
         config: Annotated[str, typer.Option("--config", help="Trainer config: a file or a shipped config's name.")] = DEMO_CONFIG,
         suite_file: Annotated[str, typer.Option("--suite", help="Suite to evaluate with.")] = "cpu-quick",
         quiet: c.QuietOpt = False) -> None:
    """Train a small I-JEPA on the embedded digits set, evaluate it and a random encoder of the same shape."""
    written = run_demo(out, config=config, suite_name=suite_file, progress=not quiet, log=c.console.print)
    c.stdout.print(f"demo finished: tables and plots in {out}")
    for path in written:
        c.stdout.print(f"  {path}")
