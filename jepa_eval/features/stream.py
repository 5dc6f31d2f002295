"""The frozen backbone in the loop: what a probe reads, computed batch by batch from (augmented) images.

For paper parity, probes can train on augmented images as the papers train theirs: the backbone
runs on every training batch and nothing is stored. :class:`StreamedTokens` gives patch tokens
[B, T, D'] (the attentive probe, as V-JEPA and CAPI), :class:`StreamedFeatures` the pooled
features [B, D'] of a feature mode (the linear probe, as DINOv2, VISSL and MAE). Training
augmentations (:data:`AUGMENTATIONS`):

- ``crop``: RandomResizedCrop (scale 0.08-1, bicubic) + horizontal flip (CAPI's);
- ``vjepa``: timm's ``create_transform(is_training=True, auto_augment='original',
  interpolation='bicubic', re_prob=0.25, re_mode='pixel', re_count=1)`` (V-JEPA's probe training).

Everything that is not a training batch (the held-out selection rows, the evaluation split) uses
the split's evaluation transform, the one the caches use; the evaluation split has no
augmentation at all. Sample i of epoch e is transformed with Python and torch random numbers
seeded by (seed, e, i), so a run is repeatable whatever the number of loader workers or
torchrun processes. Tokens are rounded through float16, as cached ones are stored; pooled
features stay float32, as the feature cache stores them.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from jepa_eval.backbones.backbone import Backbone
from jepa_eval.core.devices import autocast, init_distributed, resolve_device
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data import build_dataset, eval_transform, get_spec
from jepa_eval.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from jepa_eval.features.extract import auto_workers
from jepa_eval.features.modes import check_mode, check_tokens, embed, feature_dim, patch_tokens, token_count, token_width
from jepa_eval.features.splits import ExtractOptions
from jepa_eval.features.tokens import Batch, RowBatches, Shard, TokenLayout, TokenSplit

AUGMENTATIONS = ("crop", "vjepa")


def train_transform(augment: str, image_size: int) -> Callable[[Any], torch.Tensor]:
    """The training augmentation ``augment`` (module docstring): PIL RGB -> normalised [3, S, S]."""
    if augment == "crop":
        return T.Compose([T.RandomResizedCrop(image_size, interpolation=T.InterpolationMode.BICUBIC),
                          T.RandomHorizontalFlip(), T.ToTensor(), normalize()])
    if augment == "vjepa":
        from timm.data import create_transform

        return create_transform(input_size=image_size, is_training=True, auto_augment="original",
                                interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1,
                                mean=IMAGENET_MEAN, std=IMAGENET_STD)
    raise JepaEvalError(f"unknown augmentation {augment!r}", expected=f"one of {', '.join(AUGMENTATIONS)}")


class SeededImages(Dataset):
    """``images[i]`` (a PIL image and its label) through ``transform``, with the random numbers of
    sample i seeded by (``seed``, ``epoch``, i); the caller's random state is left as it was."""

    def __init__(self, images: Any, transform: Callable[[Any], torch.Tensor], seed: int, epoch: int) -> None:
        self.images, self.transform, self.seed, self.epoch = images, transform, seed, epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.images[index]
        sample_seed = int(np.random.SeedSequence((self.seed, self.epoch, index)).generate_state(1)[0])
        state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(sample_seed)
                torch.manual_seed(sample_seed)
                return self.transform(image), label
        finally:
            random.setstate(state)


class StreamBatches(RowBatches):
    """Batches of a streamed source: images loaded, transformed and embedded per batch."""

    def __init__(self, source: Streamed, rows: np.ndarray, batch_size: int, *, train: bool, seed: int,
                 shard: Shard) -> None:
        super().__init__(rows, batch_size, train=train, seed=seed, shard=shard)
        self.source = source
        if train and source.augment is None:
            raise ValueError("the evaluation split is never augmented: it has no training batches")

    def epoch(self, index: int) -> Iterator[Batch]:
        source = self.source
        transform = source.augment if self.train else source.transform
        local = [rows.tolist() for rows in self.local_batches(index) if rows.size]
        loader = DataLoader(SeededImages(source.images, transform, self.seed, index), batch_sampler=local,
                            num_workers=source.num_workers, pin_memory=source.device.type == "cuda")
        for images, labels in loader:
            yield source.embed(images), labels.to(torch.int64)


class Streamed(ABC):
    """The frozen ``model`` run on the images of one split for every batch.

    ``images``: the split as (PIL image, label) pairs; ``transform``: its evaluation transform;
    ``augment``: the training augmentation, or None for the evaluation split (it has no training
    batches). Subclasses say what ``embed(images [B, 3, S, S])`` returns, on ``device``.
    """

    def __init__(self, model: torch.nn.Module, images: Any, labels: np.ndarray,
                 transform: Callable[[Any], torch.Tensor], augment: Callable[[Any], torch.Tensor] | None,
                 device: torch.device, num_workers: int = 0) -> None:
        self.model = model.to(device).eval()
        self.images, self.transform, self.augment = images, transform, augment
        self.device, self.num_workers = device, num_workers
        self.labels = np.asarray(labels, dtype=np.int64)

    @abstractmethod
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """What a probe reads of images [B, 3, S, S], on the device."""

    def batches(self, rows: np.ndarray, batch_size: int, *, train: bool, seed: int = 0,
                shard: Shard = (0, 1)) -> StreamBatches:
        return StreamBatches(self, rows, batch_size, train=train, seed=seed, shard=shard)


class StreamedTokens(Streamed):
    """A token source of one split: patch tokens [B, T, D'] of the tokens ``layout``."""

    def __init__(self, backbone: Backbone, images: Any, labels: np.ndarray, layout: TokenLayout,
                 transform: Callable[[Any], torch.Tensor], augment: Callable[[Any], torch.Tensor] | None,
                 device: torch.device, num_workers: int = 0) -> None:
        check_tokens(backbone.model, layout.blocks, layout.pooling)
        super().__init__(backbone.model, images, labels, transform, augment, device, num_workers)
        self.layout = layout
        self.heads: int | None = int(backbone.arch["num_heads"])
        self.shape = (len(self.labels), token_count(backbone.model),
                      token_width(backbone.model, layout.blocks, layout.pooling))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens [B, T, D'] (float32 rounded through float16, on the device) of images [B, 3, S, S].

        No context stays open across a ``yield`` of the caller (grad mode is per thread)."""
        with torch.no_grad(), autocast(self.device):
            tokens = patch_tokens(self.model, images.to(self.device, non_blocking=True), self.layout.blocks,
                                  self.layout.pooling)
        return tokens.to(torch.float16).float()


class StreamedFeatures(Streamed):
    """A feature source of one split: the pooled features [B, D'] of feature ``mode`` (float32)."""

    def __init__(self, backbone: Backbone, images: Any, labels: np.ndarray, mode: str,
                 transform: Callable[[Any], torch.Tensor], augment: Callable[[Any], torch.Tensor] | None,
                 device: torch.device, num_workers: int = 0) -> None:
        check_mode(backbone.model, mode)
        super().__init__(backbone.model, images, labels, transform, augment, device, num_workers)
        self.mode = mode
        self.shape = (len(self.labels), feature_dim(backbone.model, mode))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Features [B, D'] (float32, on the device) of images [B, 3, S, S]."""
        with torch.no_grad(), autocast(self.device):
            features = embed(self.model, images.to(self.device, non_blocking=True), self.mode)
        return features.float()


def _streamed_pair(backbone: Backbone, dataset: str, augment: str, options: ExtractOptions,
                   make: Callable[..., Streamed]) -> tuple[TokenSplit, TokenSplit]:
    """Streamed sources of the training split (augmented with ``augment`` for training batches)
    and of the evaluation split (never augmented): ``make(images, labels, transform, augment,
    device, workers)``."""
    spec = get_spec(dataset)
    device = resolve_device(options.device)
    init_distributed(device)  # under torchrun the processes share every batch
    size = backbone.image_size
    out = []
    for split, augmentation in ((spec.train_split, train_transform(augment, size)), (spec.eval_split, None)):
        images = build_dataset(dataset, split, data_root=options.data_root, image_size=size,
                               transform=lambda image: image, download=options.download)
        workers = auto_workers(images) if options.num_workers is None else options.num_workers
        source = make(images, np.asarray(images.targets), eval_transform(size, dataset), augmentation, device, workers)
        out.append(TokenSplit(source, dataset, split, len(images.classes), str(images.root)))
    return out[0], out[1]


def streamed_splits(backbone: Backbone, dataset: str, layout: TokenLayout, augment: str,
                    options: ExtractOptions) -> tuple[TokenSplit, TokenSplit]:
    """Token sources of the training split (augmented with ``augment`` for training batches) and
    of the evaluation split (never augmented) of ``dataset``."""
    check_tokens(backbone.model, layout.blocks, layout.pooling)
    return _streamed_pair(backbone, dataset, augment, options,
                          lambda *parts: StreamedTokens(backbone, parts[0], parts[1], layout, *parts[2:]))


def streamed_feature_splits(backbone: Backbone, dataset: str, mode: str, augment: str,
                            options: ExtractOptions) -> tuple[TokenSplit, TokenSplit]:
    """Feature sources (``mode``, pooled) of the training split (augmented with ``augment`` for
    training batches) and of the evaluation split (never augmented) of ``dataset``."""
    check_mode(backbone.model, mode)
    return _streamed_pair(backbone, dataset, augment, options,
                          lambda *parts: StreamedFeatures(backbone, parts[0], parts[1], mode, *parts[2:]))
