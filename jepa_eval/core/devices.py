"""Where computation runs: the device choice, bf16 autocast on CUDA, and torchrun's process group.

One home for these rules, shared by the evaluator and the trainer: ``auto`` means this process's
CUDA device when there is one (``LOCAL_RANK`` under torchrun), else the CPU.
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

from jepa_eval.core.errors import JepaEvalError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def default_device() -> torch.device:
    """This process's CUDA device (``LOCAL_RANK`` under torchrun) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto'/None -> :func:`default_device`; 'cuda' without a GPU is an error; 'cuda' under torchrun
    is this rank's GPU."""
    if device is None or device == "auto":
        return default_device()
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise JepaEvalError(f"unknown device {device!r}", expected="'auto', 'cpu' or 'cuda[:N]'") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise JepaEvalError("CUDA was requested but is not available", expected="a CUDA device",
                                found="torch.cuda.is_available() is False", hint="use --device cpu")
        if resolved.index is None:
            return default_device()
    return resolved


def compute_dtype(device: torch.device) -> str:
    """The dtype models compute in on ``device``: bf16 autocast on CUDA, else float32."""
    return "bfloat16" if device.type == "cuda" else "float32"


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing on the CPU (which computes in float32)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def init_distributed(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world_size, started_here) from torchrun's environment; NCCL on GPU, gloo on CPU.

    A single process (no ``WORLD_SIZE`` or 1) is rank 0 of 1 and starts nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return 0, 1, False
    started = not dist.is_initialized()
    if started:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), started


def rank_and_world() -> tuple[int, int]:
    """This process's (rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank() -> int:
    """This process's rank, 0 when not distributed."""
    return rank_and_world()[0]
