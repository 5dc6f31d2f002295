"""Trainer: steps per second and peak memory of our I-JEPA step against the official step.

Both run the same objective on the same config, weights, images and masks, with AdamW (the
official four parameter groups) and an EMA update per step, and compute the same numbers up
to rounding (tests/test_trainer.py checks loss, gradients and three steps to 1e-6):

- ours: the trainer's step (:class:`ijepa.model.IJEPA`, ``update_target``): index gathers on
  an expanded index, one copy to batch the target blocks, the fused attention kernel off the
  CPU and in the target encoder, a foreach EMA over the trained parameters;
- official: a re-implementation of the official step (facebookresearch/ijepa src/train.py and
  the model, mask and tensor helpers it calls) over the same modules' weights: index masks
  gathered with ``torch.gather`` on a channel-repeated index, target blocks batched by
  repetition (``repeat`` and ``cat``), attention written out (softmax(QKᵀ·scale)V),
  ``F.smooth_l1_loss``, ``zero_grad`` after the optimiser step, and an EMA loop over every
  encoder parameter, ``k.mul_(m).add_((1 - m) * q)``. Its dropout and drop-path modules, at
  rate 0, return their input unchanged and are left out.

On CUDA both run under bf16 autocast with a GradScaler (the official ``use_bfloat16``), on CPU
in float32. Cases: the shipped CPU recipe (``configs/cifar10_tiny_30min.yaml``: ViT 128 x 4,
patch 4 on 32 px, batch 128, predictor 64 x 3), the same at batch 64
(``configs/cifar10_tiny_30min_b64.yaml``) and ViT-S/16 at 224 px, batch 8; ``--quick``: a
tiny ViT at batch 2. Speed: seconds per block of steps, timed in one process, interleaved,
median over repeats. Memory: each candidate in a fresh process; on CPU the growth of its peak
resident set (``VmHWM``) over the training steps, on CUDA ``max_memory_allocated`` during them.

Usage: ``python bench/bench_trainer.py [--quick] [--repeats R] [--out DIR]``.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchlib import Row, bench_main, interleaved_medians, make_row, run_child
from bench_memory import peak_rss_bytes

REPO = Path(__file__).resolve().parents[1]
MIB = 2 ** 20
SPEED_TARGET = ">= 1.0"
MEMORY_TARGET = "<= 1.0"
MOMENTUM = 0.996


@dataclass(frozen=True)
class Case:
    """A config to time: a shipped YAML file or official-schema overrides, and steps per timing."""

    name: str
    overrides: dict[str, Any]
    steps: int
    config_file: str | None = None


FULL = [Case("shipped CPU recipe: configs/cifar10_tiny_30min.yaml (ViT 128x4, patch 4, 32 px, batch 128)",
             {}, 5, "configs/cifar10_tiny_30min.yaml"),
        Case("shipped CPU recipe at batch 64: configs/cifar10_tiny_30min_b64.yaml",
             {}, 5, "configs/cifar10_tiny_30min_b64.yaml"),
        Case("ViT-S/16 at 224 px, batch 8, predictor depth 4",
             {"data": {"crop_size": 224, "batch_size": 8}, "mask": {"patch_size": 16},
              "meta": {"model_name": "vit_small", "pred_depth": 4}}, 2)]
QUICK = [Case("ViT-Ti/8 at 32 px, batch 2, predictor depth 1",
              {"data": {"crop_size": 32, "batch_size": 2}, "mask": {"patch_size": 8},
               "meta": {"model_name": "vit_tiny", "pred_depth": 1}}, 1)]


# ---------------------------------------------------------------------------- the official step


def apply_masks(x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """[B, N, C] -> [len(masks)·B, K, C]: each index mask [B, K] repeated over the channels
    and gathered, the results concatenated (official ``apply_masks``)."""
    return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).repeat(1, 1, x.size(-1))) for m in masks])


def repeat_interleave_batch(x: torch.Tensor, batch: int, repeat: int) -> torch.Tensor:
    """[G·B, ...] -> [G·repeat·B, ...]: each group of ``batch`` rows concatenated ``repeat``
    times (official ``repeat_interleave_batch``)."""
    groups = len(x) // batch
    return torch.cat([torch.cat([x[g * batch:(g + 1) * batch]] * repeat) for g in range(groups)])


def official_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A pre-norm block with the official written-out attention, over a timm block's weights."""
    attn = block.attn
    b, n, c = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
    x = x + attn.proj((weights @ v).transpose(1, 2).reshape(b, n, c))
    mlp = block.mlp
    return x + mlp.fc2(mlp.act(mlp.fc1(block.norm2(x))))


def official_encoder(encoder: nn.Module, images: torch.Tensor,
                     masks: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Official ``VisionTransformer.forward`` over a :class:`ijepa.model.MaskedEncoder`'s weights."""
    x = encoder.patch_embed.proj(images).flatten(2).transpose(1, 2) + encoder.pos_embed
    if masks is not None:
        x = apply_masks(x, masks)
    for block in encoder.blocks:
        x = official_block(block, x)
    return encoder.norm(x)


def official_predictor(predictor: nn.Module, x: torch.Tensor, masks_x: list[torch.Tensor],
                       masks: list[torch.Tensor]) -> torch.Tensor:
    """Official ``VisionTransformerPredictor.forward`` over a :class:`ijepa.model.Predictor`'s weights."""
    batch = len(x) // len(masks_x)
    x = predictor.predictor_embed(x)
    x += apply_masks(predictor.predictor_pos_embed.repeat(batch, 1, 1), masks_x)
    n_context = x.shape[1]
    pos = apply_masks(predictor.predictor_pos_embed.repeat(batch, 1, 1), masks)
    pos = repeat_interleave_batch(pos, batch, repeat=len(masks_x))
    tokens = predictor.mask_token.repeat(pos.size(0), pos.size(1), 1)
    tokens += pos
    x = torch.cat([x.repeat(len(masks), 1, 1), tokens], dim=1)
    for block in predictor.predictor_blocks:
        x = official_block(block, x)
    return predictor.predictor_proj(predictor.predictor_norm(x)[:, n_context:])


def official_loss(model: nn.Module, images: torch.Tensor, masks_enc: list[torch.Tensor],
                  masks_pred: list[torch.Tensor]) -> torch.Tensor:
    """The official ``forward_target``, ``forward_context`` and ``loss_fn`` (one process)."""
    with torch.no_grad():
        h = official_encoder(model.target_encoder, images)
        h = F.layer_norm(h, (h.size(-1),))
        h = repeat_interleave_batch(apply_masks(h, masks_pred), len(h), repeat=len(masks_enc))
    z = official_predictor(model.predictor, official_encoder(model.encoder, images, masks_enc), masks_enc, masks_pred)
    return F.smooth_l1_loss(z, h)


def official_ema(model: nn.Module, momentum: float) -> None:
    """The official momentum update: a loop over every encoder parameter, frozen ones included."""
    with torch.no_grad():
        for param_q, param_k in zip(model.encoder.parameters(), model.target_encoder.parameters()):
            param_k.data.mul_(momentum).add_((1.0 - momentum) * param_q.detach().data)


def official_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                  images: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor],
                  momentum: float = MOMENTUM) -> torch.Tensor:
    """One official training step (bf16 autocast and the scaler when ``scaler`` is given); the loss."""
    with _autocast(scaler is not None):
        loss = official_loss(model, images, masks_enc, masks_pred)
    _backward_and_step(loss, optimizer, scaler)
    optimizer.zero_grad()
    official_ema(model, momentum)
    return loss.detach()


def our_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
             images: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor],
             momentum: float = MOMENTUM, encoder: nn.Module | None = None,
             predictor: nn.Module | None = None) -> torch.Tensor:
    """One step as ``ijepa.train`` runs it (``encoder``/``predictor``: compiled wrappers of the
    model's own, as ``run.compile`` passes them); the loss."""
    with _autocast(scaler is not None):
        loss = model(images, masks_enc, masks_pred, encoder=encoder, predictor=predictor)
    optimizer.zero_grad(set_to_none=True)
    _backward_and_step(loss, optimizer, scaler)
    model.update_target(momentum)
    return loss.detach()


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                       scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


# ---------------------------------------------------------------------------- timing


def _config(case: Case) -> Any:
    from ijepa.config import config_from_dict, load_config

    if case.config_file:
        return load_config(REPO / case.config_file)
    return config_from_dict(case.overrides)


def make_steps(case: Case, device: torch.device,
               compile_ours: bool = False) -> tuple[dict[str, Callable[[], None]], str]:
    """``{"ours": steps, "official": steps}`` on copies of one model's weights, images and masks,
    and a line describing the masks. Each call runs ``case.steps`` optimiser steps; with
    ``compile_ours`` our encoder and predictor run under ``torch.compile``."""
    from ijepa.masks import MultiBlockMasker
    from ijepa.train import build_model, param_groups

    cfg = _config(case)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    batch, size = cfg.data.batch_size, cfg.data.crop_size
    images = torch.randn(batch, 3, size, size, device=device)
    enc, pred = MultiBlockMasker(cfg.mask, size, seed=0).sample(batch)
    enc, pred = [m.to(device) for m in enc], [m.to(device) for m in pred]
    bf16 = device.type == "cuda"

    def stepper(step: Callable[..., torch.Tensor], compiled: bool = False) -> Callable[[], None]:
        own = copy.deepcopy(model)
        optimizer = torch.optim.AdamW(param_groups(own.encoder, own.predictor), lr=1e-4)
        scaler = torch.amp.GradScaler("cuda") if bf16 else None
        modules = {"encoder": torch.compile(own.encoder), "predictor": torch.compile(own.predictor)} if compiled else {}

        def run_steps() -> None:
            for _ in range(case.steps):
                step(own, optimizer, scaler, images, enc, pred, **modules)
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run_steps

    steps = {"ours": stepper(our_step, compile_ours), "official": stepper(official_step)}
    masks = f"context {enc[0].shape[1]} patches, {len(pred)} targets of {pred[0].shape[1]}"
    return steps, masks


def measure_memory_child(case_index: int, quick: bool, which: str) -> None:
    """In a fresh process: print JSON {before, after} peak bytes around one candidate's first
    steps (resident set on CPU, CUDA allocations on a GPU), optimiser state included."""
    device = _device()
    steps, _ = make_steps((QUICK if quick else FULL)[case_index], device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        steps[which]()
        after = torch.cuda.max_memory_allocated()
    else:
        before = peak_rss_bytes()
        steps[which]()
        after = peak_rss_bytes()
    print(json.dumps({"before": before, "after": after}))


def _memory(case_index: int, quick: bool, which: str) -> float:
    """Peak memory growth (MiB) of ``which`` on a case, measured in a fresh process."""
    measured = run_child("bench_trainer", f"measure_memory_child({case_index}, {quick}, {which!r})")
    return (measured["after"] - measured["before"]) / MIB


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run(quick: bool, repeats: int | None) -> list[Row]:
    device = _device()
    precision = "bf16 autocast" if device.type == "cuda" else "float32"
    rows = []
    for index, case in enumerate(QUICK if quick else FULL):
        steps, masks = make_steps(case, device)
        seconds, _ = interleaved_medians(steps, repeats or 3)
        rate = {name: case.steps / s for name, s in seconds.items()}
        where = f"{device.type} {precision}, {masks}"
        rows.append(make_row("trainer", case.name, "I-JEPA step (ours)", "official step", "steps/s", rate["ours"],
                             rate["official"], rate["ours"] / rate["official"], SPEED_TARGET, repeats or 3,
                             f"speed-up; {where}; {case.steps} steps per timing",
                             miss_note="the same arithmetic in both: a miss within a few percent is "
                                       "timing noise, a larger one a regression of our step"))
        memory = {name: _memory(index, quick, name) for name in ("ours", "official")}
        rows.append(make_row("trainer", case.name, "I-JEPA step (ours)", "official step", "MiB", memory["ours"],
                             memory["official"], memory["ours"] / memory["official"], MEMORY_TARGET, 1,
                             f"cost ratio of peak memory growth over {case.steps} steps, each in a fresh "
                             f"process ({'CUDA max_memory_allocated' if device.type == 'cuda' else 'VmHWM'})",
                             miss_note="ours keeps more activations than the official step (on a GPU the "
                                       "fused attention should keep fewer)"))
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main("trainer", run, __doc__, argv)


if __name__ == "__main__":
    main()
