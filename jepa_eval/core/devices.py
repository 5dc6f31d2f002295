"""torchrun support shared by the evaluator and the trainer."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


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


def rank() -> int:
    """This process's rank, 0 when not distributed."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
