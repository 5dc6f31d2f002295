"""Patch tokens of a split as a probe reads them: a token source, its mini-batches, their order.

A :class:`TokenSource` holds one split's labels and gives mini-batches (tokens float32 [B, T, D'],
labels int64 [B]) of any of its rows. Two kinds exist:

- :class:`TokenArray`: the tokens in an array [N, T, D'] (the feature cache's float16 memory
  map, or memory), read batch by batch;
- :class:`~jepa_eval.features.stream.StreamedTokens`: the frozen backbone run on every batch of
  images, augmented for training.

Both cut an epoch into the same batches (:func:`epoch_batches`) and round tokens through
float16, so on the same un-augmented images they give the same batches.

Training batches (``train=True``) are a permutation of the rows seeded by (seed, epoch), cut into
full batches (the last incomplete one is dropped); other batches take every row once, in order.
The rows of a batch are sorted (kind to memory maps). Under torchrun each process reads its share
of every batch, rows ``rank::world`` (``shard``), and the probe all-reduces what it needs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.features.modes import TOKEN_POOLING

Batch = tuple[torch.Tensor, torch.Tensor]
Shard = tuple[int, int]  # (rank, world size)
TOKEN_BYTES = 2  # tokens are stored as float16


@dataclass(frozen=True)
class TokenLayout:
    """Which patch tokens: those of the last ``blocks`` blocks, combined by ``pooling``
    ('concat' along the channels, or 'mean' as AIM)."""

    blocks: int = 1
    pooling: str = "concat"

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.pooling not in TOKEN_POOLING:
            raise JepaEvalError("invalid patch-token layout",
                                expected=f"blocks >= 1 and block pooling in {TOKEN_POOLING}",
                                found=f"blocks {self.blocks}, pooling {self.pooling!r}")

    @property
    def name(self) -> str:
        """How records name these tokens (their feature mode): 'tokens', 'tokens4', 'tokens4-mean'."""
        if self.blocks == 1:
            return "tokens"
        return f"tokens{self.blocks}" + ("-mean" if self.pooling == "mean" else "")


def token_bytes(shape: tuple[int, int, int]) -> int:
    """Bytes of the tokens [N, T, D'] as float16 plus their int64 labels."""
    rows, length, width = shape
    return rows * length * width * TOKEN_BYTES + rows * 8


class BatchSource(Protocol):
    """Mini-batches of one pass: ``len()`` batches an epoch; ``epoch(e)`` yields (tokens, labels)."""

    def __len__(self) -> int: ...

    def epoch(self, index: int) -> Iterable[Batch]: ...


class TokenSource(Protocol):
    """One split's patch tokens: ``labels`` int64 [N], ``shape`` (N, T, D'), the encoder's
    attention ``heads`` (None when unknown), and mini-batches of any rows."""

    labels: np.ndarray
    shape: tuple[int, int, int]
    heads: int | None

    def batches(self, rows: np.ndarray, batch_size: int, *, train: bool, seed: int = 0,
                shard: Shard = (0, 1)) -> BatchSource: ...


def epoch_batches(rows: np.ndarray, batch_size: int, *, train: bool, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch over ``rows``, each sorted (module docstring)."""
    order = rows
    if train:
        order = rows[np.random.default_rng((seed, epoch)).permutation(rows.size)]
        count = rows.size // batch_size
    else:
        count = math.ceil(rows.size / batch_size)
    return [np.sort(order[i * batch_size:(i + 1) * batch_size]) for i in range(count)]


class RowBatches:
    """Batches of ``rows`` of a source (see the module docstring); subclasses read them in ``epoch``."""

    def __init__(self, rows: np.ndarray, batch_size: int, *, train: bool, seed: int, shard: Shard) -> None:
        self.rows = np.asarray(rows, dtype=np.int64)
        self.batch_size = min(batch_size, max(self.rows.size, 1))
        self.train, self.seed, self.shard = train, seed, shard

    def __len__(self) -> int:
        whole = self.rows.size // self.batch_size
        return whole if self.train else math.ceil(self.rows.size / self.batch_size)

    def local_batches(self, epoch: int) -> list[np.ndarray]:
        """This process's rows of every batch of ``epoch``."""
        rank, world = self.shard
        return [rows[rank::world] for rows in epoch_batches(self.rows, self.batch_size, train=self.train,
                                                              seed=self.seed, epoch=epoch)]

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.epoch(0))  # type: ignore[attr-defined]


class ArrayBatches(RowBatches):
    """Batches read from an array of tokens [N, T, D'] (any float dtype, converted to float32)."""

    def __init__(self, tokens: Any, labels: np.ndarray, rows: np.ndarray, batch_size: int, *, train: bool,
                 seed: int, shard: Shard) -> None:
        super().__init__(rows, batch_size, train=train, seed=seed, shard=shard)
        self.tokens, self.labels = tokens, labels

    def epoch(self, index: int) -> Iterator[Batch]:
        for rows in self.local_batches(index):
            if rows.size and rows[-1] - rows[0] + 1 == rows.size:  # consecutive: one slice
                block = self.tokens[rows[0]:rows[-1] + 1]
            else:
                block = self.tokens[rows]
            yield (torch.from_numpy(np.asarray(block, dtype=np.float32)),
                   torch.from_numpy(self.labels[rows].astype(np.int64)))


class TokenArray:
    """A :class:`TokenSource` over tokens [N, T, D'] (numpy, a memory map, or torch) and labels [N]."""

    def __init__(self, tokens: Any, labels: Any, heads: int | None = None, name: str = "tokens") -> None:
        array = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else tokens
        shape = tuple(getattr(array, "shape", ()))
        if len(shape) != 3 or 0 in shape:
            pooled = len(shape) == 2
            raise JepaEvalError(f"{name} have no patch tokens" if pooled else f"{name} have the wrong shape",
                                expected="a non-empty 3-D array [samples, tokens, width] of patch tokens",
                                found=f"shape {shape}" + (", pooled features [samples, width]" if pooled else ""),
                                hint="extract the patch tokens, not pooled features" if pooled else None)
        if not np.issubdtype(array.dtype, np.floating):
            raise JepaEvalError(f"{name} are not floats", expected="a float array (float16 or float32)",
                                found=f"dtype {array.dtype}")
        labels = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
        if labels.shape != shape[:1] or not np.issubdtype(labels.dtype, np.integer):
            raise JepaEvalError(f"the labels of the {name} do not match them",
                                expected=f"{shape[0]} integer labels, one per sample",
                                found=f"shape {labels.shape}, dtype {labels.dtype}")
        self.tokens, self.labels, self.heads = array, labels.astype(np.int64), heads
        self.shape: tuple[int, int, int] = shape  # type: ignore[assignment]

    def batches(self, rows: np.ndarray, batch_size: int, *, train: bool, seed: int = 0,
                shard: Shard = (0, 1)) -> ArrayBatches:
        return ArrayBatches(self.tokens, self.labels, rows, batch_size, train=train, seed=seed, shard=shard)


@dataclass
class TokenSplit:
    """One split's token source and what a result record says of it."""

    source: TokenSource
    dataset: str
    split: str
    num_classes: int
    root: str
    cache_hit: bool = False

    @property
    def size(self) -> int:
        return int(self.source.shape[0])
