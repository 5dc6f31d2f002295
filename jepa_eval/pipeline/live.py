"""Collapse monitoring inside any training loop: :class:`LiveMonitor`.

::

    import jepa_eval

    monitor = jepa_eval.LiveMonitor(data=held_out, every=1000, out="runs/me/monitor.json")
    for step, (images, _) in enumerate(loader, start=1):
        loss = train_step(model, images)
        monitor.step(model.encoder, step, loss=loss.item())

Every ``every`` steps the encoder embeds a fixed held-out batch; the label-free metrics of the
monitor (RankMe, alpha-ReQ, feature std, mean cosine, uniformity) are computed on its
average-pooled features, with a quick k-NN when a labelled bank is given, the one
:class:`~jepa_eval.protocols.monitor.CollapseRule` is applied, and the rows are written as a
``monitor`` result record (``step`` coordinates), the same rows ``jepa-eval monitor`` writes
per checkpoint. The loop is left as it was: the torch (CPU and CUDA), numpy and Python RNG
states are restored, every module's train/eval mode is put back, and nothing is recorded for
autograd. The bundled trainer's live monitor (``run.monitor_every``) is one of these.
"""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from jepa_eval.core.atomic import atomic_write_json
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols import get_protocol
from jepa_eval.protocols.knn import REFERENCE_K, KNNConfig, knn_evaluate
from jepa_eval.protocols.monitor import CollapseRule, Point, points_of
from jepa_eval.protocols.rank import alpha_req, feature_std, mean_cosine, rankme, uniformity
from jepa_eval.results.record import DatasetInfo, FeatureInfo, ModelInfo, ResultRecord, read_record

#: alpha-ReQ's default fit runs over eigenvalues 10..100: it needs N >= 12 rows and D >= 11 dimensions.
ALPHA_MIN_ROWS, ALPHA_MIN_DIM = 12, 11
Images = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | torch.utils.data.Dataset


Encoder = Callable[[torch.Tensor], Any]


@contextlib.contextmanager
def untouched(encoder: Encoder | None = None) -> Iterator[None]:
    """Run a block without gradients and, for a module, in eval mode; then restore every RNG
    (torch CPU, the CUDA devices in use, numpy, Python) and each submodule's own train/eval flag."""
    modes = [(m, m.training) for m in encoder.modules()] if isinstance(encoder, nn.Module) else []
    python, numpy = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            for module, _ in modes:
                module.training = False
            yield
    finally:
        for module, training in modes:
            module.training = training
        random.setstate(python)
        np.random.set_state(numpy)


def _as_images(data: Images, samples: int, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images [N, ...] float32 and labels [N] int64 (or None) of a tensor, an (images, labels)
    pair or a dataset (``samples`` items evenly spaced over it, so every class of a
    class-sorted folder is in)."""
    if isinstance(data, torch.Tensor):
        return data.float(), None
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        images, labels = data
        if len(images) != len(labels):
            raise JepaEvalError(f"the {what} images and labels differ in number",
                                expected="one label per image", found=f"{len(images)} images, {len(labels)} labels")
        return images.float(), torch.as_tensor(labels).long()
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        picks = np.linspace(0, len(data) - 1, min(samples, len(data))).round().astype(int)
        pairs = [data[int(i)] for i in picks]
        return torch.stack([p[0] for p in pairs]).float(), torch.tensor([int(p[1]) for p in pairs])
    raise JepaEvalError(f"the {what} must be images", expected="a tensor [N, 3, H, W], an (images, labels) pair "
                        "or a torch Dataset of (image, label)", found=f"a {type(data).__name__}")


def label_free(z: torch.Tensor) -> dict[str, float]:
    """The monitor's label-free metrics of features ``z [N, D]``; alpha-ReQ only where its fit
    range fits (N >= 12, D >= 11)."""
    rank = rankme(z)
    values = {"rankme": rank, "rankme_norm": rank / min(z.shape)}
    if z.shape[0] >= ALPHA_MIN_ROWS and z.shape[1] >= ALPHA_MIN_DIM:
        values["alpha_req"], values["alpha_req_r2"] = alpha_req(z)
    values.update(feature_std=feature_std(z), mean_cosine=mean_cosine(z), uniformity=uniformity(z))
    return values


class LiveMonitor:
    """The monitor's metrics on a fixed held-out batch, every ``every`` steps of a training loop.

    ``data``: the held-out images (a tensor [N, 3, H, W], an (images, labels) pair, or a Dataset
    of which ``samples`` items are taken, evenly spaced; inside :func:`untouched`, so a random
    transform there draws nothing from the loop's RNG), held in memory as float32.
    ``bank``: labelled training images in the same forms for a quick k-NN (DINO's weighted vote,
    k = ``knn_k``) of the held-out images, which then need labels. ``out``: a ``.json`` file or a folder for the result record, rewritten atomically
    after each measurement (an existing record at a ``.json`` path is continued: a resumed run
    drops the points at or after the step it restarts from). ``rule``: the collapse rule
    (default thresholds when None); on collapse a ``RuntimeWarning`` is issued and
    ``on_collapse(step, reason)`` called. ``device``: where the encoder runs (default: where its
    parameters are); ``autocast``: a context manager factory for the forward passes (default:
    bf16 autocast on CUDA). The encoder's output is average-pooled over tokens when it is
    [B, T, D]; a DDP wrapper is looked through (its forward would synchronise processes).
    """

    def __init__(self, data: Images, *, every: int = 1000, out: str | Path | None = None, bank: Images | None = None,
                 samples: int = 512, knn_k: int = REFERENCE_K, rule: CollapseRule | None = None,
                 name: str = "live", dataset: str = "held-out batch", family: str = "unknown",
                 device: str | torch.device | None = None, batch_size: int = 64,
                 autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                 on_collapse: Callable[[int, str], Any] | None = None) -> None:
        if every < 1:
            raise JepaEvalError("LiveMonitor's every is not a step count", expected="every >= 1", found=f"{every}")
        with untouched():
            self.images, self.labels = _as_images(data, samples, "held-out data")
            self.bank = None if bank is None else _as_images(bank, samples, "k-NN bank")
        if len(self.images) < 2:
            raise JepaEvalError("LiveMonitor needs at least 2 held-out images", found=f"{len(self.images)}")
        if self.bank is not None and (self.labels is None or self.bank[1] is None or len(self.bank[0]) < knn_k):
            raise JepaEvalError("the live k-NN needs labelled held-out images and a labelled bank of at least k images",
                                expected=f"(images, labels) pairs for data and bank, a bank of >= {knn_k} images",
                                found=f"held-out labels {'given' if self.labels is not None else 'missing'}, "
                                      f"bank of {len(self.bank[0])}", hint="lower knn_k or give more bank images")
        self.every, self.knn_k, self.rule = every, knn_k, rule or CollapseRule()
        self.device, self.batch_size, self.autocast, self.on_collapse = device, batch_size, autocast, on_collapse
        self.name, self.dataset, self.family = name, dataset, family
        self.out = None if out is None else Path(out)
        self.protocol = get_protocol("monitor", runs_on="run")
        self.points: list[Point] = []
        self.record: ResultRecord | None = None
        self.collapse: tuple[int, str] | None = None
        self.pooling = "avgpool"
        self.path = None if self.out is None else (self.out if self.out.suffix == ".json" else None)
        if self.path is not None and self.path.exists():
            self.record = read_record(self.path)
            self.points = points_of(self.record, axis="step")

    def step(self, encoder: Encoder, step: int, *, epoch: int | None = None,
             loss: float | None = None) -> dict[str, float] | None:
        """Measure at every ``every``-th step (returns the values), else do nothing (None)."""
        if step % self.every:
            return None
        return self.measure(encoder, step, epoch=epoch, loss=loss)

    def measure(self, encoder: Encoder, step: int, *, epoch: int | None = None, loss: float | None = None,
                device: str | torch.device | None = None,
                autocast: Callable[[], contextlib.AbstractContextManager] | None = None) -> dict[str, float]:
        """Measure now: the metrics of this step (with ``train_loss`` when ``loss`` is given),
        written to the record; ``device``/``autocast`` override the monitor's for this call."""
        started = time.perf_counter()
        module = encoder.module if isinstance(encoder, nn.parallel.DistributedDataParallel) else encoder
        with untouched(module):
            z = self._pooled(module, self.images, device, autocast)
            values = label_free(z)
            if self.bank is not None:
                bank = self._pooled(module, self.bank[0], device, autocast)
                metrics = knn_evaluate(bank.numpy(), self.bank[1].numpy(), z.numpy(), self.labels.numpy(),  # type: ignore[union-attr]
                                       KNNConfig(ks=(self.knn_k,)))
                values.update({f"knn_{m.name}": m.value for m in metrics})
        if loss is not None:
            values["train_loss"] = float(loss)
        coords: dict[str, Any] = {"step": int(step)} | ({"epoch": int(epoch)} if epoch is not None else {})
        self.points = [p for p in self.points if p.coords["step"] < step] + [Point(coords, values)]
        self._write(int(z.shape[0]), time.perf_counter() - started)
        watch = self.rule.watch()
        reasons = [watch.observe(p.values) for p in self.points]
        if reasons[-1] is not None:
            warnings.warn(f"representation collapse at step {step}: {reasons[-1]}", RuntimeWarning, stacklevel=2)
            if self.collapse is None and self.on_collapse is not None:
                self.on_collapse(step, reasons[-1])
        self.collapse = next(((p.coords["step"], r) for p, r in zip(self.points, reasons) if r is not None), None)
        return values

    def _pooled(self, encoder: Encoder, images: torch.Tensor, device: str | torch.device | None,
                autocast: Callable[[], contextlib.AbstractContextManager] | None) -> torch.Tensor:
        """Features float32 [N, D] on the CPU: the output, averaged over tokens when [B, T, D]."""
        where = torch.device(device or self.device or _device_of(encoder))
        make = autocast or self.autocast or (lambda: torch.autocast("cuda", dtype=torch.bfloat16,
                                                                    enabled=where.type == "cuda"))
        chunks = []
        for chunk in images.split(self.batch_size):
            with make():
                out = encoder(chunk.to(where))
            out = out[0] if isinstance(out, (tuple, list)) else out
            self.pooling = "avgpool" if out.ndim == 3 else "output"
            chunks.append((out.mean(dim=1) if out.ndim == 3 else out).float().cpu())
        return torch.cat(chunks)

    def _write(self, rows: int, seconds: float) -> None:
        evaluation = self.protocol.evaluate(self.points, self.rule, axis="step")
        if self.record is None:
            self.record = ResultRecord(
                protocol=self.protocol.name, protocol_version=self.protocol.version,
                model=ModelInfo(name=self.name, path=str(self.out or ""), sha256=None, family=self.family,
                                ckpt_key=None, arch={}),
                dataset=DatasetInfo(name=self.dataset, n_used=rows), features=FeatureInfo(mode=self.pooling),
                params={"every": self.every, "images": rows, "knn_k": self.knn_k if self.bank else None,
                        "knn_bank": len(self.bank[0]) if self.bank else None, **asdict(self.rule)},
                metrics=[], summary={})
        self.record.metrics, self.record.summary = evaluation.metrics, evaluation.summary
        self.record.wall_time_s += seconds
        if self.out is not None:
            self.path = self.path or self.out / f"{self.record.run_id}.json"
            atomic_write_json(self.path, self.record.to_json())


def _device_of(encoder: Encoder) -> torch.device:
    """Where a module's parameters are (the CPU for a plain function or a module without any)."""
    if isinstance(encoder, nn.Module):
        for parameter in encoder.parameters():
            return parameter.device
    return torch.device("cpu")
