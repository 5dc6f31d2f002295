"""The I-JEPA training loop: one process, or one per GPU under ``torchrun`` (DDP).

Read top to bottom: data -> model and optimizer -> resume -> per-iteration step -> per-epoch
checkpoint and collapse monitor. Everything that decides the result is a function of the
config and the seed: data order comes from a seeded ``DistributedSampler`` (seed, epoch),
masks from the seeded :class:`~ijepa.masks.MultiBlockMasker`, augmentations from the
process's torch RNG; all three states and the global step go into every checkpoint, so a
resumed run continues exactly where the interrupted one stopped.

Files in ``logging.folder``: ``{tag}-latest.pth.tar`` (every epoch), ``{tag}-ep{N}.pth.tar``
(every ``run.checkpoint_freq`` epochs), ``{tag}_r{rank}.csv`` (one row per iteration),
``{tag}_monitor.csv`` and ``{tag}_monitor.json`` (RankMe, feature std and optionally k-NN
accuracy of the target encoder, when ``run.monitor_every`` > 0; the JSON record holds every
metric of the monitor) and
``params-ijepa.yaml`` (the resolved config).
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import logging
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ijepa.checkpoint import (add_prefix, epoch_path, latest_path, load_checkpoint, rng_state,
                              save_checkpoint, set_rng_state, strip_prefix)
from ijepa.config import TrainConfig, encoder_dims, predictor_dims, save_config
from ijepa.masks import MultiBlockMasker
from ijepa.model import IJEPA, MaskedEncoder, Predictor
from ijepa.schedules import Schedules
from jepa_eval.core.devices import init_distributed, resolve_device
from jepa_eval.data.transforms import normalize
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.progress import progress as progress_bar

logger = logging.getLogger(__name__)

LOG_COLUMNS = ("epoch", "itr", "loss", "context_patches", "target_patches", "lr", "wd", "momentum", "time_ms")
MONITOR_COLUMNS = ("step", "epoch", "rankme", "feature_std")


@dataclass
class TrainResult:
    """What a run did: ``losses`` holds the loss of every iteration of this call (averaged over
    processes), ``epochs`` the completed epochs at the end, ``latest`` the last checkpoint."""

    losses: list[float] = field(default_factory=list)
    epochs: int = 0
    steps: int = 0
    latest: Path | None = None
    monitor: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------- data


def train_transform(cfg: TrainConfig) -> Callable:
    """RandomResizedCrop(crop_size, crop_scale) [+ flip, colour distortion, blur] -> normalised tensor."""
    from torchvision import transforms as T

    d = cfg.data
    steps: list[Any] = [T.RandomResizedCrop(d.crop_size, scale=tuple(d.crop_scale))]
    if d.use_horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    if d.use_color_distortion:
        s = d.color_jitter_strength
        steps += [T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
                  T.RandomGrayscale(p=0.2)]
    if d.use_gaussian_blur:
        steps.append(T.RandomApply([T.GaussianBlur(kernel_size=2 * (d.crop_size // 20) + 1, sigma=(0.1, 2.0))], p=0.5))
    steps += [T.ToTensor(), normalize()]
    return T.Compose(steps)


def image_folder(cfg: TrainConfig) -> Path:
    """``root_path/image_folder/train`` if it exists, else ``root_path/image_folder``."""
    folder = Path(cfg.data.root_path) / cfg.data.image_folder
    return folder / "train" if (folder / "train").is_dir() else folder


def eval_folder(cfg: TrainConfig) -> Path:
    """The held-out images of a config without ``run.dataset``: a ``val`` or ``test`` folder
    beside the training folder, else the training folder itself."""
    folder = image_folder(cfg)
    return next((folder.parent / s for s in ("val", "test") if (folder.parent / s).is_dir()), folder)


def build_images(cfg: TrainConfig, split: str, transform: Callable) -> Dataset:
    """The registry dataset ``run.dataset`` (split ``split``), else an ImageFolder of the config's folder."""
    if cfg.run.dataset:
        from jepa_eval.data import build_dataset, get_spec

        spec = get_spec(cfg.run.dataset)
        name = spec.train_split if split == "train" else spec.eval_split
        return build_dataset(cfg.run.dataset, name, data_root=cfg.run.data_root, transform=transform)
    from torchvision.datasets import ImageFolder

    folder = image_folder(cfg) if split == "train" else eval_folder(cfg)
    if not folder.is_dir():
        raise JepaEvalError(f"training images not found at {folder}",
                            expected="data.root_path/data.image_folder holding class folders of images (or a train/ folder of them)",
                            found="no such folder", hint="set data.root_path and data.image_folder, or run.dataset")
    try:
        return ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as exc:
        raise JepaEvalError(f"no training images in {folder}", expected="class folders holding image files",
                            found=f"torchvision's ImageFolder says: {exc}") from exc


def build_loader(cfg: TrainConfig, rank: int, world: int) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled, seeded, drop-last loader of this rank's share of the training images."""
    dataset = build_images(cfg, "train", train_transform(cfg))
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                 seed=cfg.run.seed, drop_last=True)
    batch = cfg.data.batch_size
    if len(sampler) < batch:
        raise JepaEvalError("the training set is smaller than one batch per process",
                            expected=f"at least {batch * world} images (batch_size {batch} x {world} processes)",
                            found=f"{len(dataset)} images", hint="lower data.batch_size")
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True,
                        num_workers=cfg.data.num_workers, pin_memory=cfg.data.pin_mem and torch.cuda.is_available())
    return loader, sampler


# ---------------------------------------------------------------------------- model


def build_model(cfg: TrainConfig) -> IJEPA:
    """Encoder (named size or run overrides), its EMA copy and the predictor, float32 on CPU,
    initialised as ``run.init`` says from the global torch RNG."""
    embed_dim, depth, num_heads, mlp_ratio = encoder_dims(cfg)
    pred_dim, pred_depth, pred_heads = predictor_dims(cfg)
    encoder = MaskedEncoder(embed_dim, depth, num_heads, cfg.mask.patch_size, cfg.data.crop_size, mlp_ratio)
    pixel_dim = 3 * cfg.mask.patch_size**2 if cfg.run.target == "pixels" else None
    predictor = Predictor(encoder.grid, embed_dim, pred_dim, pred_depth, pred_heads, pixel_dim=pixel_dim)
    return IJEPA(encoder, predictor, loss=cfg.run.loss, target=cfg.run.target, init=cfg.run.init)


def param_groups(*modules: nn.Module) -> list[dict[str, Any]]:
    """AdamW groups in the official order: each module's weights (decayed), then each module's
    biases and 1-D parameters (``WD_exclude``, weight decay 0). Frozen parameters are left out."""
    decay, no_decay = [], []
    for module in modules:
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        decay.append({"params": [p for n, p in params if p.ndim > 1 and not n.endswith(".bias")]})
        no_decay.append({"params": [p for n, p in params if p.ndim <= 1 or n.endswith(".bias")],
                         "WD_exclude": True, "weight_decay": 0.0})
    return decay + no_decay


def set_lr_wd(optimizer: torch.optim.Optimizer, lr: float, wd: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
        if not group.get("WD_exclude"):
            group["weight_decay"] = wd


# ---------------------------------------------------------------------------- processes


def mean_over_ranks(value: torch.Tensor, world: int) -> float:
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


def gather_rng(world: int) -> list[dict[str, Any]]:
    """Every rank's RNG states, indexed by rank (identical on every rank after the call)."""
    states: list[Any] = [None] * world
    if world > 1:
        dist.all_gather_object(states, rng_state())
        return states
    return [rng_state()]


# ---------------------------------------------------------------------------- logs


class CsvLog:
    """Append-only CSV with a header; a resumed run appends to the same file."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path, self.columns = path, columns
        new = not path.exists() or path.stat().st_size == 0
        if not new:
            with open(path, newline="") as existing:
                header = tuple(next(csv.reader(existing), ()))
            if header != columns:
                raise JepaEvalError(f"cannot append to the log {path}: its columns differ",
                                    expected=",".join(columns), found=",".join(header),
                                    hint="resume with the config that wrote it, or move the file away")
        self.handle = open(path, "a", newline="")
        self.writer = csv.writer(self.handle)
        if new:
            self.writer.writerow(columns)

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow([row[c] for c in self.columns])
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


class CollapseMonitor:
    """The trainer's live monitor: a :class:`jepa_eval.pipeline.live.LiveMonitor` (the same
    metrics and the one collapse rule, :class:`jepa_eval.protocols.monitor.CollapseRule`, as
    ``jepa-eval monitor``) on the target encoder's average-pooled features of a fixed batch of
    held-out images (eval transform), with ``run.monitor_knn`` > 0 a k-NN top-1 (DINO's weighted
    vote, k = ``run.monitor_knn_k``) against a fixed memory bank of that many training images.
    Each measurement is a row of ``{tag}_monitor.csv`` (step, epoch, RankMe, feature std[, k-NN])
    and the whole series the result record ``{tag}_monitor.json``; a collapsed measurement
    issues a ``RuntimeWarning``.

    Both image sets are picked evenly spaced over their split (so every class of a
    class-sorted folder is represented) and held in memory as float32 [N, 3, S, S]. Where the
    held-out images are the training folder itself, the bank leaves them out.
    """

    def __init__(self, cfg: TrainConfig, path: Path) -> None:
        from jepa_eval.data import eval_transform
        from jepa_eval.pipeline.live import LiveMonitor

        name = cfg.run.dataset or f"imagefolder:{image_folder(cfg)}"
        transform = eval_transform(cfg.data.crop_size, name)
        held_out = build_images(cfg, "eval", transform)
        index = _spaced(range(len(held_out)), cfg.run.monitor_samples)
        self.images, self.labels = _stack(held_out, index)
        self.k = cfg.run.monitor_knn_k
        self.bank: tuple[torch.Tensor, torch.Tensor] | None = None
        if cfg.run.monitor_knn:
            train_images = build_images(cfg, "train", transform)
            shared = cfg.run.dataset is None and eval_folder(cfg) == image_folder(cfg)
            pool = sorted(set(range(len(train_images))) - set(index)) if shared else range(len(train_images))
            if len(pool) < self.k:
                raise JepaEvalError("too few training images for the monitor's k-NN",
                                    expected=f"at least run.monitor_knn_k = {self.k} training images "
                                             "outside the monitor's held-out set",
                                    found=f"{len(pool)}", hint="lower run.monitor_knn_k or run.monitor_samples")
            self.bank = _stack(train_images, _spaced(pool, cfg.run.monitor_knn))
        self.live = LiveMonitor(data=(self.images, self.labels), bank=self.bank, knn_k=self.k,
                                every=max(1, cfg.run.monitor_every), out=path.with_suffix(".json"),
                                name=path.parent.name, dataset=name, family="ijepa")
        columns = MONITOR_COLUMNS + (("knn_top1",) if self.bank is not None else ())
        self.log = CsvLog(path, columns)

    def __call__(self, encoder: Callable[[torch.Tensor], torch.Tensor], step: int, epoch: int,
                 device: torch.device, autocast: Callable[[], contextlib.AbstractContextManager]) -> dict[str, float]:
        """Measure at ``step`` (of 1-based ``epoch``): the row written to the CSV log, followed by
        every other value measured."""
        values = self.live.measure(encoder, step, epoch=epoch, device=device, autocast=autocast)
        row = {"step": step, "epoch": epoch, **{k: values[k] for k in self.log.columns[2:]}}
        self.log.write(row)
        logger.info("monitor at step %d: %s", step,
                    ", ".join(f"{key} {values[key]:.4g}" for key in self.log.columns[2:]))
        return {**row, **values}


def _spaced(pool: Any, n: int) -> list[int]:
    """``n`` (or all, if fewer) indices of the sequence ``pool``, evenly spaced over it."""
    pool = list(pool)
    picks = np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)
    return [pool[i] for i in picks]


def _stack(dataset: Dataset, index: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 3, S, S] float32 and labels [N] int64 of ``dataset`` at ``index``."""
    pairs = [dataset[i] for i in index]
    return torch.stack([image for image, _ in pairs]), torch.tensor([int(label) for _, label in pairs])


# ---------------------------------------------------------------------------- the run


def train(cfg: TrainConfig, *, device: str | None = None, progress: bool = True) -> TrainResult:
    """Train (or resume, with ``meta.load_checkpoint``) an I-JEPA model as ``cfg`` says."""
    dev = resolve_device(device or cfg.run.device)
    rank, world, started_dist = init_distributed(dev)
    try:
        return _run(cfg, dev, rank, world, progress)
    finally:
        if started_dist:
            dist.destroy_process_group()


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _run(cfg: TrainConfig, device: torch.device, rank: int, world: int, progress: bool) -> TrainResult:
    folder, tag = Path(cfg.logging.folder), cfg.logging.write_tag
    folder.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_config(cfg, folder / "params-ijepa.yaml")

    # -- model, optimizer, masks, data (model init identical on every rank)
    _seed_all(cfg.run.seed)
    model = build_model(cfg).to(device)
    optimizer = torch.optim.AdamW(param_groups(model.encoder, model.predictor))
    bf16 = cfg.meta.use_bfloat16 and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if bf16 else None
    masker = MultiBlockMasker(cfg.mask, cfg.data.crop_size, seed=cfg.run.seed)
    loader, sampler = build_loader(cfg, rank, world)
    ipe = min(len(loader), cfg.run.max_iters_per_epoch or len(loader))
    schedules = Schedules.from_config(cfg.optimization, ipe)
    _seed_all(cfg.run.seed + rank)  # augmentations differ between ranks

    # -- resume
    start_epoch, itr = 0, 0
    if cfg.load_path is not None:
        start_epoch, itr = _resume(cfg.load_path, model, optimizer, scaler, masker, rank, world)

    encoder: nn.Module = model.encoder
    predictor: nn.Module = model.predictor
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        encoder = DistributedDataParallel(encoder, device_ids=ids)
        predictor = DistributedDataParallel(predictor, device_ids=ids)
    if cfg.run.compile:
        encoder, predictor = torch.compile(encoder), torch.compile(predictor)

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    monitor = (CollapseMonitor(cfg, folder / f"{tag}_monitor.csv")
               if rank == 0 and cfg.run.monitor_every > 0 else None)
    log = CsvLog(folder / f"{tag}_r{rank}.csv", LOG_COLUMNS)
    result = TrainResult(epochs=start_epoch, steps=itr)
    last_good = latest_path(folder, tag) if start_epoch else None
    try:
        for epoch in range(start_epoch, cfg.optimization.epochs):
            sampler.set_epoch(epoch)
            model.train()
            losses: list[float] = []
            bar = progress_bar(total=ipe, desc=f"epoch {epoch + 1}/{cfg.optimization.epochs}", unit="step",
                               enabled=progress and rank == 0, leave=False)
            for images, _ in itertools.islice(loader, ipe):
                start = time.perf_counter()
                lr, wd, momentum = schedules.at(itr)
                set_lr_wd(optimizer, lr, wd)
                masks_enc, masks_pred = masker.sample(images.shape[0])
                images = images.to(device, non_blocking=True)
                masks_enc = [m.to(device, non_blocking=True) for m in masks_enc]
                masks_pred = [m.to(device, non_blocking=True) for m in masks_pred]
                with autocast():
                    loss = model(images, masks_enc, masks_pred, encoder=encoder, predictor=predictor)
                value = mean_over_ranks(loss.detach(), world)
                if not math.isfinite(value):
                    raise JepaEvalError(
                        f"training diverged: the loss is {value} at step {itr} (epoch {epoch + 1})",
                        expected="a finite loss", found=f"loss {value} (lr {lr:.3g}, wd {wd:.3g})",
                        hint=(f"the last good checkpoint is {last_good}" if last_good else
                              "no checkpoint was written yet") + "; lower optimization.lr or check the data")
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                model.update_target(momentum)
                itr += 1
                losses.append(value)
                log.write({"epoch": epoch + 1, "itr": itr, "loss": f"{value:.6f}",
                           "context_patches": masks_enc[0].shape[1], "target_patches": masks_pred[0].shape[1],
                           "lr": f"{lr:.6g}", "wd": f"{wd:.6g}", "momentum": f"{momentum:.6f}",
                           "time_ms": f"{1000 * (time.perf_counter() - start):.1f}"})
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
                if rank == 0 and itr % cfg.run.log_every == 0:
                    logger.info("epoch %d step %d: loss %.4f lr %.3g wd %.3g momentum %.5f",
                                epoch + 1, itr, value, lr, wd, momentum)
                if monitor is not None and itr % cfg.run.monitor_every == 0:
                    result.monitor.append(monitor(model.target_encoder, itr, epoch + 1, device, autocast))
            bar.close()
            result.losses += losses
            result.epochs, result.steps = epoch + 1, itr
            epoch_loss = sum(losses) / max(1, len(losses))
            rng = gather_rng(world)
            if rank == 0:
                ckpt = _checkpoint(cfg, model, optimizer, scaler, masker, rng, epoch + 1, itr, epoch_loss, lr, world)
                last_good = result.latest = save_checkpoint(latest_path(folder, tag), **ckpt)
                if (epoch + 1) % cfg.run.checkpoint_freq == 0:
                    save_checkpoint(epoch_path(folder, tag, epoch + 1), **ckpt)
                logger.info("epoch %d: loss %.4f (%d steps)", epoch + 1, epoch_loss, len(losses))
    finally:
        log.close()
        if monitor is not None:
            monitor.log.close()
    return result


def _checkpoint(cfg: TrainConfig, model: IJEPA, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler | None, masker: MultiBlockMasker, rng: list[dict[str, Any]],
                epoch: int, itr: int, loss: float, lr: float, world: int) -> dict[str, Any]:
    """Official keys (``module.``-prefixed state dicts) plus masker, rng, config, itr."""
    return {
        "encoder": add_prefix(model.encoder.state_dict()),
        "predictor": add_prefix(model.predictor.state_dict()),
        "target_encoder": add_prefix(model.target_encoder.state_dict()),
        "opt": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch, "loss": loss, "batch_size": cfg.data.batch_size, "world_size": world, "lr": lr,
        "masker": masker.state_dict(), "rng": rng, "config": cfg.to_dict(), "itr": itr,
    }


def _resume(path: Path, model: IJEPA, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None, masker: MultiBlockMasker, rank: int, world: int) -> tuple[int, int]:
    """Load every state of a checkpoint; return (completed epochs, global step)."""
    ckpt = load_checkpoint(path)
    try:
        model.encoder.load_state_dict(strip_prefix(ckpt["encoder"]))
        model.predictor.load_state_dict(strip_prefix(ckpt["predictor"]))
        model.target_encoder.load_state_dict(strip_prefix(ckpt["target_encoder"]))
        optimizer.load_state_dict(ckpt["opt"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise JepaEvalError(f"checkpoint {path} does not match this config's model",
                            expected="the same model size, patch size, crop size and predictor as the run that wrote it",
                            found=str(exc).splitlines()[0]) from exc
    if scaler is not None and ckpt["scaler"] is not None:
        scaler.load_state_dict(ckpt["scaler"])
    masker.load_state_dict(ckpt["masker"])
    states = ckpt["rng"]
    if len(states) != world:
        warnings.warn(f"resuming {len(states)}-process RNG states in a {world}-process run: "
                      "augmentations will not repeat the interrupted run exactly", RuntimeWarning, stacklevel=2)
    set_rng_state(states[rank % len(states)])
    logger.info("resumed from %s: %d epochs, %d steps done", path, ckpt["epoch"], ckpt["itr"])
    return int(ckpt["epoch"]), int(ckpt["itr"])
