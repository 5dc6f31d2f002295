"""The patch tokens of dataset splits for a backbone, from the feature cache or extracted into it.

Tokens are stored as float16 [N, T, D'] (``features.npy`` of a cache entry, beside ``labels.npy``
and the usual manifest) and read back memory-mapped, so a probe reads them batch by batch. The key
is a split's usual key with the token layout as the mode ('tokens', 'tokens4', 'tokens4-mean') and
the stored dtype. Before any extraction, the room every missing split needs is checked: free disk
under the cache root or, with the cache off (the tokens are then held in memory), available
memory; a run that would not fit is refused with the size it needs, before anything is written.

Under torchrun every rank embeds a strided shard. With the cache, rank 0 creates the entry's files
and every rank writes its rows into them (so the cache folder must be one that all ranks see, as
on one machine); without it, every rank gathers all shards.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from jepa_eval.backbones.backbone import Backbone
from jepa_eval.core.devices import autocast, compute_dtype, init_distributed, resolve_device
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.progress import progress as progress_bar
from jepa_eval.data import build_dataset, eval_transform
from jepa_eval.features.cache import FeatureCache, cache_key
from jepa_eval.features.extract import auto_workers
from jepa_eval.features.modes import check_tokens, patch_tokens, token_count, token_width
from jepa_eval.features.splits import ExtractOptions, split_key_parts
from jepa_eval.features.tokens import TOKEN_BYTES, TokenArray, TokenLayout, TokenSplit, token_bytes

# Bump when patch_tokens() or the way tokens are stored changes: it is part of every token key.
TOKEN_CODE_VERSION = "1"

Arrays = tuple[np.ndarray, np.ndarray, dict[str, Any]]


@dataclass
class _Plan:
    """One split to read or extract: its dataset, cache-key parts and token shape (N, T, D')."""

    split: str
    data: Any
    parts: dict[str, Any]
    shape: tuple[int, int, int]


def split_tokens(backbone: Backbone, dataset: str, splits: Sequence[str], layout: TokenLayout,
                 options: ExtractOptions) -> list[TokenSplit]:
    """The patch tokens of each of ``splits`` of ``dataset`` (eval transform), cached or extracted.

    Raises :class:`JepaEvalError` before any extraction when the model has no patch tokens or the
    missing splits would not fit (module docstring).
    """
    check_tokens(backbone.model, layout.blocks, layout.pooling)
    device = resolve_device(options.device)
    rank, world, _ = init_distributed(device)
    cache = options.cache()
    plans = [_plan(backbone, dataset, split, layout, options, device) for split in splits]
    found = [_lookup(cache, plan, rank, world) for plan in plans]
    missing = [plan for plan, arrays in zip(plans, found) if arrays is None]
    if missing:
        check_room(sum(token_bytes(p.shape) for p in missing), cache, _contents(dataset, missing), world)
    heads = int(backbone.arch["num_heads"])
    out = []
    for plan, arrays in zip(plans, found):
        hit = arrays is not None
        if arrays is None:
            arrays = _extract(backbone, plan, layout, cache, options, device, rank, world)
        tokens, labels, _ = arrays
        out.append(TokenSplit(TokenArray(tokens, labels, heads=heads), dataset, plan.split,
                              len(plan.data.classes), str(plan.data.root), hit))
    return out


def _plan(backbone: Backbone, dataset: str, split: str, layout: TokenLayout, options: ExtractOptions,
          device: torch.device) -> _Plan:
    transform = eval_transform(backbone.image_size, dataset)
    data = build_dataset(dataset, split, data_root=options.data_root, image_size=backbone.image_size,
                         transform=transform, download=options.download)
    parts = split_key_parts(backbone, dataset, split, data.root, len(data), transform, layout.name,
                            tokens={"blocks": layout.blocks, "pooling": layout.pooling, "stored": "float16",
                                    "code_version": TOKEN_CODE_VERSION},
                            dtype=compute_dtype(device))
    model = backbone.model
    return _Plan(split, data, parts, (len(data), token_count(model), token_width(model, layout.blocks,
                                                                                 layout.pooling)))


def _contents(dataset: str, plans: Sequence[_Plan]) -> str:
    """'cifar10/train and cifar10/test: (50,000 + 10,000) images x 64 tokens x 128 channels x 2 bytes'."""
    names = " and ".join(f"{dataset}/{p.split}" for p in plans)
    rows = " + ".join(f"{p.shape[0]:,}" for p in plans)
    _, length, width = plans[0].shape
    return f"{names}: ({rows}) images x {length} tokens x {width} channels x {TOKEN_BYTES} bytes"


def size_text(count: int) -> str:
    """Bytes in the largest binary unit below them: '1.50 GiB (1,610,612,736 bytes)'."""
    power = min(max(0, (count.bit_length() - 1) // 10), 4)
    unit = ("bytes", "KiB", "MiB", "GiB", "TiB")[power]
    return f"{count:,} bytes" if power == 0 else f"{count / 1024**power:.2f} {unit} ({count:,} bytes)"


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable`` of /proc/meminfo)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def free_disk(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (or its nearest existing parent)."""
    existing = folder.resolve()
    while not existing.exists():
        existing = existing.parent
    return shutil.disk_usage(existing).free


def check_room(needed: int, cache: FeatureCache | None, what: str, world: int = 1) -> None:
    """Refuse tokens of ``needed`` bytes that would not fit on the cache's disk, or in memory
    when there is no cache (every one of ``world`` ranks then holds them all)."""
    hint = ("use fewer --blocks or --block-pooling mean, or the backbone in the loop (--augment), "
            "which stores no tokens")
    if cache is None:
        have, total = available_memory(), needed * world
        if total > have:
            ranks = f" on each of {world} ranks" if world > 1 else ""
            raise JepaEvalError("the patch tokens would not fit in memory",
                                expected=f"{size_text(total)} of memory for {what}{ranks} (the feature cache "
                                         "is off, so the tokens are held in memory)",
                                found=f"{size_text(have)} available",
                                hint="turn the feature cache on (tokens are then memory-mapped from disk), " + hint)
        return
    have = free_disk(cache.root)
    if needed > have:
        raise JepaEvalError("the patch tokens would not fit on the disk of the feature cache",
                            expected=f"{size_text(needed)} free under {cache.root} for {what}",
                            found=f"{size_text(have)} free", hint="--cache-dir on a larger disk, or " + hint)


def _broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _lookup(cache: FeatureCache | None, plan: _Plan, rank: int, world: int) -> Arrays | None:
    """The cached tokens of ``plan`` (memory-mapped), or None. Under torchrun rank 0 checks the
    entry's digests and the other ranks open it after."""
    if cache is None:
        return None
    key = cache_key(plan.parts)
    if world == 1:
        return cache.get_arrays(key, mmap=True)
    arrays = cache.get_arrays(key, mmap=True) if rank == 0 else None
    if not _broadcast(arrays is not None):
        return None
    return arrays if rank == 0 else cache.get_arrays(key, mmap=True, verify_digests=False)


def _extract(backbone: Backbone, plan: _Plan, layout: TokenLayout, cache: FeatureCache | None,
             options: ExtractOptions, device: torch.device, rank: int, world: int) -> Arrays:
    """Extract ``plan``'s tokens into a new cache entry (then memory-mapped) or into memory."""
    rows = np.arange(plan.shape[0])[rank::world]
    started = time.perf_counter()

    def fill(tokens: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Write this rank's rows into ``tokens`` [N, T, D'] and ``labels`` [N]; return the meta."""
        for index, batch, targets in _embed(backbone, plan, layout, rows, options, device, rank == 0):
            tokens[index], labels[index] = batch, targets
        return {"mode": layout.name, "shape": list(plan.shape), "stored_dtype": "float16", "device": str(device),
                "compute_dtype": compute_dtype(device), "world_size": world,
                "wall_time_s": round(time.perf_counter() - started, 3)}

    if cache is None:
        tokens = np.empty(plan.shape, np.float16)
        labels = np.zeros(plan.shape[0], np.int64)
        meta = fill(tokens, labels)
        if world > 1:
            tokens, labels = _gather_everywhere(tokens, labels, rows, world)
        return tokens, labels, meta
    key = cache_key(plan.parts)

    def fill_files(folder: Path, mode: str) -> dict[str, Any]:
        tokens, labels = _open_files(folder, plan.shape, mode)
        meta = fill(tokens, labels)
        tokens.flush()
        labels.flush()
        return meta

    if world == 1:
        cache.write_entry(key, plan.parts, lambda folder: fill_files(folder, "w+"))
    elif rank == 0:
        def write_shared(folder: Path) -> dict[str, Any]:
            _open_files(folder, plan.shape, "w+")  # creates both files
            _broadcast(str(folder))
            meta = fill_files(folder, "r+")
            dist.barrier()  # every rank's rows are written
            return meta

        cache.write_entry(key, plan.parts, write_shared)
        dist.barrier()  # the entry is in place
    else:
        fill_files(Path(_broadcast(None)), "r+")
        dist.barrier()  # every rank's rows are written
        dist.barrier()  # rank 0 has moved the entry into place
    arrays = cache.get_arrays(key, mmap=True, verify_digests=False)
    if arrays is None:
        raise JepaEvalError("the token cache entry just written cannot be read back",
                            expected=f"a valid entry {key} under {cache.root}", found="none or an invalid one",
                            hint="under torchrun the cache folder must be one that every rank sees")
    return arrays


def _open_files(folder: Path, shape: tuple[int, int, int], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The entry's ``features.npy`` (float16 [N, T, D']) and ``labels.npy`` (int64 [N]) as memory
    maps: created with ``mode`` 'w+', opened for writing with 'r+'."""
    if mode == "w+":
        return (np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float16, shape=shape),
                np.lib.format.open_memmap(folder / "labels.npy", mode="w+", dtype=np.int64, shape=(shape[0],)))
    return np.load(folder / "features.npy", mmap_mode=mode), np.load(folder / "labels.npy", mmap_mode=mode)


def _embed(backbone: Backbone, plan: _Plan, layout: TokenLayout, rows: np.ndarray, options: ExtractOptions,
           device: torch.device, show: bool) -> Iterator[tuple[Any, np.ndarray, np.ndarray]]:
    """(where, tokens float16 [b, T, D'], labels [b]) for ``rows`` of the split, batch by batch;
    ``where`` indexes the split's rows (a slice when ``rows`` is every row)."""
    model = backbone.model.to(device)
    shard = Subset(plan.data, rows.tolist())
    workers = auto_workers(shard) if options.num_workers is None else options.num_workers
    loader = DataLoader(shard, batch_size=options.batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    every_row = rows.size == plan.shape[0]
    done = 0
    batches = progress_bar(loader, desc=f"tokens {plan.split} [{layout.name}]", unit="batch",
                           enabled=options.progress and show)
    for images, targets in batches:
        with torch.inference_mode(), autocast(device):  # closed before the yield: grad mode is per thread
            tokens = patch_tokens(model, images.to(device, non_blocking=True), layout.blocks, layout.pooling)
            tokens = tokens.to(torch.float16).cpu().numpy()
        picked = rows[done:done + len(tokens)]
        _raise_if_not_finite(tokens, picked)
        where = slice(done, done + len(tokens)) if every_row else picked
        yield where, tokens, torch.as_tensor(targets).numpy().astype(np.int64)
        done += len(tokens)


def _raise_if_not_finite(tokens: np.ndarray, indices: np.ndarray) -> None:
    bad = ~np.isfinite(tokens).all(axis=(1, 2))
    if bad.any():
        first = ", ".join(str(int(i)) for i in indices[bad][:5])
        raise JepaEvalError("the backbone produced NaN or infinite patch tokens",
                            expected="finite tokens within float16's range (|x| <= 65504) for every image",
                            found=f"{int(bad.sum())} of {len(tokens)} images in a batch (first dataset indices: {first})",
                            hint="check the checkpoint's weights and the input images; on GPU, bf16 overflow "
                                 "is possible in very deep models")


def _gather_everywhere(tokens: np.ndarray, labels: np.ndarray, rows: np.ndarray,
                       world: int) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's rows of ``tokens`` / ``labels`` (full-size arrays, this rank's rows filled)
    on every rank."""
    shards: list[Any] = [None] * world
    dist.all_gather_object(shards, (rows, tokens[rows], labels[rows]))
    for shard_rows, shard_tokens, shard_labels in shards:
        tokens[shard_rows], labels[shard_rows] = shard_tokens, shard_labels
    return tokens, labels
