"""The training loss of each epoch, from the per-iteration CSV log a trainer writes beside its checkpoints.

Two layouts are read, both named ``{tag}_r{rank}.csv`` (rank 0's is used):

- the official I-JEPA log: ``epoch,itr,loss,mask-A,mask-B,time (ms)``, ``itr`` counting from 0
  within each epoch, the header written again each time the trainer (re)starts;
- ours (``ijepa train``): ``epoch,itr,loss,context_patches,target_patches,lr,wd,momentum,time_ms``,
  ``itr`` the global step.

In both, ``epoch`` is 1-based: the rows of epoch E are the iterations whose end is the
checkpoint holding ``'epoch': E`` (completed epochs). A resumed run may log an interrupted epoch
twice; a block of an epoch ends where ``itr`` stops increasing (or at a repeated header), and
the last block of an epoch is the one its checkpoint saw.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

LOG_GLOB = "*_r0.csv"


@dataclass(frozen=True)
class EpochLosses:
    """Mean training loss per completed epoch (``{epoch: loss}``) and the log file it came from."""

    losses: dict[int, float]
    source: Path


def find_log(run_dir: Path) -> Path | None:
    """Rank 0's CSV log in ``run_dir`` (the newest when there are several tags), or None."""
    logs = [p for p in run_dir.glob(LOG_GLOB) if p.is_file()]
    return max(logs, key=lambda p: p.stat().st_mtime_ns) if logs else None


def read_epoch_losses(path: Path) -> EpochLosses:
    """The mean ``loss`` of each epoch's last block of rows in the log ``path``.

    Rows that are not numbers (a repeated header, a line cut short by a crash) are skipped and
    end the block; non-finite losses are left out of the mean. A file without ``epoch``, ``itr``
    and ``loss`` columns gives no epochs.
    """
    blocks: dict[int, list[float]] = {}
    previous: tuple[int, int] | None = None
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        try:
            epoch_at, itr_at, loss_at = (header.index(name) for name in ("epoch", "itr", "loss"))
        except ValueError:
            return EpochLosses({}, path)
        for row in reader:
            try:
                epoch, itr, loss = int(row[epoch_at]), int(row[itr_at]), float(row[loss_at])
            except (IndexError, ValueError):
                previous = None
                continue
            if previous is None or epoch != previous[0] or itr <= previous[1]:
                blocks[epoch] = []  # a new block of this epoch replaces an earlier one
            previous = (epoch, itr)
            if math.isfinite(loss):
                blocks[epoch].append(loss)
    return EpochLosses({e: sum(v) / len(v) for e, v in sorted(blocks.items()) if v}, path)


def run_epoch_losses(run_dir: Path) -> EpochLosses | None:
    """:func:`read_epoch_losses` of the run's log, or None when it has none."""
    log = find_log(run_dir)
    return None if log is None else read_epoch_losses(log)
