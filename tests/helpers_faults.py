"""Shared tools for the bad-input and fault-injection tests.

Run the two command lines in-process (fast, for exit codes and messages) or as child processes
(for signals, kills and tracebacks); list what a run left on disk; build a tiny trainer config
and read its per-iteration loss log.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jepa_eval.core.atomic import TMP_MARKER
from jepa_eval.features.cache import FeatureCache

REPO = Path(__file__).resolve().parents[1]
PROGRAMS = {"jepa-eval": "jepa_eval.cli.app", "ijepa": "ijepa.cli"}
# Child processes use one thread so that their losses match an in-process run bit for bit.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
             "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


@dataclass
class Outcome:
    """How a command ended: exit ``code`` (negative = killed by that signal), its output streams."""

    code: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        """stderr with rich's line wrapping undone: one line of words."""
        return " ".join(self.stderr.split())


def run_main(program: str, args: list[str]) -> Outcome:
    """Run ``program``'s console entry point (``main()``) in this process with ``args``.

    Exceptions that ``main`` lets through (e.g. under ``--debug``) propagate to the caller.
    """
    module = __import__(PROGRAMS[program], fromlist=["main"])
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = [program, *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            module.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return Outcome(code, out.getvalue(), err.getvalue())


def child_command(program: str, args: list[str]) -> list[str]:
    """The argv that runs ``program`` in a fresh interpreter from the repository root."""
    return [sys.executable, "-c", f"from {PROGRAMS[program]} import main; main()", *args]


class Child:
    """A command running in a child process; its stdout and stderr go to files in ``logs``."""

    def __init__(self, program: str, args: list[str], logs: Path, **env: str) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / "stdout.txt", logs / "stderr.txt"
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.process = subprocess.Popen(child_command(program, args), cwd=REPO, text=True, stdout=out,
                                            stderr=err, env={**os.environ, **CHILD_ENV, **env})

    def stderr_has(self, text: str) -> bool:
        return text in self.err_path.read_text()

    def wait(self, timeout: float = 300) -> Outcome:
        code = self.process.wait(timeout=timeout)
        return Outcome(code, self.out_path.read_text(), self.err_path.read_text())


def run_child(program: str, args: list[str], logs: Path, timeout: float = 300) -> Outcome:
    """Run ``program args`` to completion in a child process."""
    return Child(program, args, logs).wait(timeout)


def wait_until(condition: Callable[[], bool], timeout: float, child: Child | None = None,
               poll_s: float = 0.02) -> bool:
    """Poll ``condition`` until it holds (True), ``timeout`` seconds pass or ``child`` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if child is not None and child.process.poll() is not None:
            return condition()
        time.sleep(poll_s)
    return False


def temp_leftovers(*folders: Path) -> list[Path]:
    """Every file or folder under ``folders`` whose name carries the atomic writers' temp marker."""
    return sorted(p for folder in folders if folder.exists() for p in folder.rglob(f"*{TMP_MARKER}*"))


def result_files(results_dir: Path) -> list[Path]:
    """Result JSON files (not temporaries) under ``results_dir``."""
    if not results_dir.is_dir():
        return []
    return sorted(p for p in results_dir.rglob("*.json") if TMP_MARKER not in p.name)


def cache_folders(cache_dir: Path) -> list[Path]:
    """Every entry folder (valid or not) and temporary folder under a feature cache root."""
    return sorted(p for p in cache_dir.iterdir() if p.is_dir()) if cache_dir.is_dir() else []


def all_cache_entries_valid(cache_dir: Path) -> bool:
    """True when every folder under ``cache_dir`` is a complete entry (features or tokens) whose digests match."""
    cache = FeatureCache(cache_dir)
    folders = cache_folders(cache_dir)
    return all(TMP_MARKER not in f.name and cache.get_arrays(f.name) is not None for f in folders)


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def smooth_images(root: Path, classes: int, per_class: int, size: int = 32, seed: int = 0) -> Path:
    """``root/<class c>/<i>.png``: smooth random pictures (coarse noise upsampled), ``size`` px."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            coarse = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(coarse).resize((size, size), Image.BILINEAR).save(folder / f"{i}.png")
    return root


def trainer_config(images: Path, folder: Path, *, epochs: int = 3, resume: bool = False) -> dict[str, Any]:
    """A tiny trainer config: 64-wide, 2-deep encoder on 32 px crops (patch 8), batch 8, CPU."""
    return {
        "data": {"batch_size": 8, "crop_size": 32, "root_path": str(images.parent), "image_folder": images.name,
                 "num_workers": 0, "pin_mem": False},
        "logging": {"folder": str(folder), "write_tag": "jepa"},
        "mask": {"patch_size": 8, "min_keep": 1},
        "meta": {"model_name": "vit_tiny", "pred_depth": 1, "pred_emb_dim": 32, "use_bfloat16": False,
                 "load_checkpoint": resume},
        "optimization": {"epochs": epochs, "warmup": 1, "lr": 1e-3, "start_lr": 1e-4, "final_lr": 1e-5},
        "run": {"embed_dim": 64, "depth": 2, "num_heads": 4, "device": "cpu", "checkpoint_freq": 1, "seed": 0},
    }


def logged_losses(csv_path: Path) -> dict[int, list[float]]:
    """Every loss logged per global step ``itr`` (a resumed run logs some steps again).

    A last line cut short by a kill (wrong field count or unparsable number) is skipped.
    """
    losses: dict[int, list[float]] = {}
    if not csv_path.exists():
        return losses
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0] if rows else []
    for row in rows[1:]:
        if len(row) != len(header) or row == header:
            continue
        record = dict(zip(header, row))
        try:
            losses.setdefault(int(record["itr"]), []).append(float(record["loss"]))
        except ValueError:
            continue
    return losses
