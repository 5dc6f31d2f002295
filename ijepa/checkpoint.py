"""Training checkpoints in the official I-JEPA layout, plus what an exact resume needs.

Official keys: ``encoder``, ``predictor``, ``target_encoder`` (state dicts whose keys start
with ``module.``, as saved from DDP wrappers), ``opt``, ``scaler`` (None without a grad
scaler), ``epoch`` (completed epochs), ``loss``, ``batch_size``, ``world_size``, ``lr``.
Ours, which the official loader ignores: ``masker`` (mask generator state), ``rng`` (torch,
CUDA, numpy and Python RNG states), ``config`` (the resolved training config) and ``itr``
(optimizer steps taken). Everything is a tensor, dict, list, tuple, number or string, so
``torch.load(path, weights_only=True)`` reads the file.

File names: ``{tag}-latest.pth.tar`` every epoch and ``{tag}-ep{N}.pth.tar`` every
``checkpoint_freq`` epochs with N = completed epochs. (The official trainer names the file
after epoch index + 1 but stores the completed count minus one, an off-by-one we do not keep.)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa_eval.core.atomic import atomic_torch_save
from jepa_eval.core.errors import JepaEvalError

PREFIX = "module."
OFFICIAL_KEYS = ("encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss",
                 "batch_size", "world_size", "lr")


def latest_path(folder: str | Path, tag: str) -> Path:
    return Path(folder) / f"{tag}-latest.pth.tar"


def epoch_path(folder: str | Path, tag: str, epoch: int) -> Path:
    return Path(folder) / f"{tag}-ep{epoch}.pth.tar"


def add_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{k: v}`` -> ``{'module.' + k: v}`` (the official DDP-wrapped layout), tensors detached."""
    return {PREFIX + k: v.detach().clone() for k, v in state.items()}


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove one leading ``module.`` from every key that has it."""
    return {k[len(PREFIX):] if k.startswith(PREFIX) else k: v for k, v in state.items()}


def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), numpy and Python RNG states as plain tensors and lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


def save_checkpoint(path: str | Path, **entries: Any) -> Path:
    """Write a checkpoint atomically; ``entries`` must hold at least :data:`OFFICIAL_KEYS`."""
    missing = [k for k in OFFICIAL_KEYS if k not in entries]
    if missing:
        raise ValueError(f"checkpoint entries missing: {missing}")
    return atomic_torch_save(entries, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    A missing, unreadable or foreign file is a :class:`JepaEvalError`: resuming never falls
    back silently to a fresh start.
    """
    path = Path(path)
    hint = "set meta.load_checkpoint: false to start a new run, or meta.read_checkpoint to a file name"
    if not path.is_file():
        raise JepaEvalError(f"cannot resume: checkpoint {path} does not exist",
                            expected="a {tag}-latest.pth.tar written by an earlier run", found="no such file",
                            hint=hint)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise JepaEvalError(f"cannot resume: checkpoint {path} is unreadable",
                            expected="a file saved by torch.save", found=f"{type(exc).__name__}: {exc}",
                            hint=hint) from exc
    missing = [k for k in (*OFFICIAL_KEYS, "itr", "masker", "rng") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise JepaEvalError(f"cannot resume exactly from {path}",
                            expected="a checkpoint of this trainer (official keys plus itr, masker, rng)",
                            found=f"missing keys {missing}", hint=hint)
    return ckpt
