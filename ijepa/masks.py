"""Multi-block masks for I-JEPA: one context block and several target blocks per image.

The image is a grid of H x W patches, numbered in raster order (``row * W + col``). For each
batch the sampler draws ONE target block shape (scale from ``pred_mask_scale``, height/width
ratio from ``aspect_ratio``) and ONE context block shape (scale from ``enc_mask_scale``, ratio
1). A shape of scale ``s`` and ratio ``a`` covers ``n = int(H*W*s)`` patches nominally:
``h = round(sqrt(n*a))`` rows and ``w = round(sqrt(n/a))`` columns, each kept within
``[1, cap]``. Then, for every image:

1. ``num_pred_masks`` target blocks are placed at random corners (they may overlap each other);
2. ``num_enc_masks`` context blocks are placed at random corners; unless ``allow_overlap``,
   every target patch is removed from each context block (with ``allow_overlap`` the targets
   stay visible inside the context). A context must keep more than ``min_keep`` patches, else
   its corner is drawn again. After 20 failed draws in a row the constraint of one more target
   is dropped, the last target first (as the official code does), so sampling always ends:
   with every target dropped the context is the whole block, and the config guarantees that
   the smallest context block has more than ``min_keep`` patches (see :func:`context_floor`).
   ``relaxations`` counts how often that happened.

All index tensors of a batch are cut to the shortest one (its first indices in raster order),
so that they stack into ``[B, K]`` tensors. Target blocks of a batch all have ``h*w`` patches.

Three flaws of the official sampler (facebookresearch/ijepa ``src/masks/multiblock.py``) are
fixed by default; ``official_quirks: true`` restores them for exact parity:

(1) Corners. The official code draws the top-left corner with ``randint(0, H - h)``, whose
    upper end is exclusive, so a block never touches the last row or the last column: those
    patches are never a target and never context. To keep that draw non-empty it also caps
    ``h`` and ``w`` at ``H - 1`` and ``W - 1``. Fixed: corners in ``[0, H - h]`` inclusive and
    blocks up to the full grid, so every patch is reachable.
(2) Shape draws. The official code uses ONE uniform draw for both the scale and the aspect
    ratio, so small targets are always the flattest and large ones the tallest. Fixed: two
    independent draws.
(3) Context position. With ``enc_mask_scale`` [0.85, 1.0] on a 16 x 16 grid (224 px, patch 14)
    the context block is 15 x 15 after the cap and ``randint(0, 1)`` is always 0: the context
    is always the top-left 15 x 15 patches. A consequence of (1), fixed by (1).

One difference remains in either mode: the official code also applies ``min_keep`` to target
blocks, where it can only always pass or loop forever (targets are never constrained); here it
applies to contexts only. Random numbers come from one seeded ``torch.Generator`` (state in
:meth:`MultiBlockMasker.state_dict`), not the official per-iteration seed plus global RNG.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

import torch

from jepa_eval.core.errors import JepaEvalError

RELAX_AFTER = 20
"""Failed context draws in a row after which one more target constraint is dropped."""


class MaskSettings(Protocol):
    """What the sampler reads of the config's ``mask`` section (:class:`ijepa.config.MaskConfig`)."""

    allow_overlap: bool
    aspect_ratio: tuple[float, float]
    enc_mask_scale: tuple[float, float]
    min_keep: int
    num_enc_masks: int
    num_pred_masks: int
    patch_size: int
    pred_mask_scale: tuple[float, float]
    official_quirks: bool

logger = logging.getLogger(__name__)


def block_shape(scale: float, aspect: float, grid: tuple[int, int],
                official_quirks: bool = False) -> tuple[int, int]:
    """Block (rows, cols) in patches covering about ``scale`` of a ``grid`` (rows, cols) with
    height/width ratio ``aspect``.

    Rows and cols are at least 1 and at most the grid's, or one less with the official quirks
    (flaw 1).
    """
    n = int(grid[0] * grid[1] * scale)
    cap = 1 if official_quirks else 0
    rows = min(max(int(round(math.sqrt(n * aspect))), 1), grid[0] - cap)
    cols = min(max(int(round(math.sqrt(n / aspect))), 1), grid[1] - cap)
    return rows, cols


def context_floor(cfg: MaskSettings, grid: tuple[int, int]) -> int:
    """Patches in the smallest context block ``cfg`` can draw on ``grid`` (at the lowest
    ``enc_mask_scale``): it must exceed ``min_keep`` for sampling to always end."""
    rows, cols = block_shape(cfg.enc_mask_scale[0], 1.0, grid, cfg.official_quirks)
    return rows * cols


class MultiBlockMasker:
    """Draws context and target patch indices for batches of ``input_size`` images.

    ``grid`` is the patch grid (rows, cols); ``relaxations`` counts the contexts for which a
    target constraint was dropped after ``RELAX_AFTER`` failed draws. All randomness comes from
    one ``torch.Generator`` seeded with ``seed``; :meth:`state_dict` saves it for exact resume.
    """

    def __init__(self, cfg: MaskSettings, input_size: int | tuple[int, int], seed: int = 0) -> None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        patch = cfg.patch_size
        if len(size) != 2 or any(s % patch or s < 2 * patch for s in size):
            raise JepaEvalError(
                "the image size does not fit the mask patch size",
                expected=f"height and width that are multiples of patch_size {patch}, "
                         "at least 2 patches each",
                found=f"input size {input_size}",
                hint="change data.crop_size or mask.patch_size")
        self.cfg = cfg
        self.grid: tuple[int, int] = (size[0] // patch, size[1] // patch)
        floor = context_floor(cfg, self.grid)
        if floor <= cfg.min_keep:
            raise JepaEvalError(
                "mask.min_keep can never be met",
                expected=f"min_keep below {floor}, the patches of the smallest context block "
                         f"on a {self.grid[0]} x {self.grid[1]} grid",
                found=f"min_keep {cfg.min_keep}",
                hint="lower mask.min_keep or raise mask.enc_mask_scale[0]")
        self.relaxations = 0
        self._gen = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Masks for one batch of ``batch_size`` images.

        Returns (contexts, targets): ``num_enc_masks`` LongTensors [B, K_enc] and
        ``num_pred_masks`` LongTensors [B, K_pred] of patch indices, ascending (raster order),
        each list cut to its shortest mask.
        """
        if batch_size < 1:
            raise JepaEvalError("cannot sample masks for an empty batch",
                                expected="batch_size >= 1", found=f"batch_size {batch_size}")
        cfg = self.cfg
        target_shape = self._draw_shape(cfg.pred_mask_scale, cfg.aspect_ratio)
        context_shape = self._draw_shape(cfg.enc_mask_scale, (1.0, 1.0))
        targets = torch.stack([self._place(target_shape, batch_size)
                               for _ in range(cfg.num_pred_masks)])
        contexts = torch.stack([self._place_context(context_shape, targets)
                                for _ in range(cfg.num_enc_masks)])
        return _first_indices(contexts), _first_indices(targets)

    def state_dict(self) -> dict[str, Any]:
        """The generator state (a uint8 tensor) and the relaxation count."""
        return {"generator": self._gen.get_state(), "relaxations": self.relaxations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`: the next batches equal those the saved sampler drew."""
        if not isinstance(state, dict) or not isinstance(state.get("generator"), torch.Tensor):
            raise JepaEvalError("mask sampler state is not readable",
                                expected="a dict with a 'generator' state tensor",
                                found=f"{type(state).__name__} "
                                      f"{sorted(state) if isinstance(state, dict) else ''}")
        self._gen.set_state(state["generator"])
        self.relaxations = int(state.get("relaxations", 0))

    def _draw_shape(self, scale: tuple[float, float],
                    aspect: tuple[float, float]) -> tuple[int, int]:
        """One block shape (rows, cols): scale and ratio uniform in their ranges; one shared
        draw with the official quirks (flaw 2), independent draws otherwise."""
        u_scale, u_aspect = torch.rand(2, generator=self._gen).tolist()
        if self.cfg.official_quirks:
            u_aspect = u_scale
        return block_shape(scale[0] + u_scale * (scale[1] - scale[0]),
                           aspect[0] + u_aspect * (aspect[1] - aspect[0]),
                           self.grid, self.cfg.official_quirks)

    def _place(self, shape: tuple[int, int], count: int) -> torch.Tensor:
        """``count`` blocks of ``shape`` at random corners: bool [count, H, W]."""
        (rows, cols), (height, width) = shape, self.grid
        reach = 0 if self.cfg.official_quirks else 1  # flaw 1: exclusive upper end
        top = torch.randint(0, height - rows + reach, (count, 1), generator=self._gen)
        left = torch.randint(0, width - cols + reach, (count, 1), generator=self._gen)
        r, c = torch.arange(height), torch.arange(width)
        in_rows = (r >= top) & (r < top + rows)
        in_cols = (c >= left) & (c < left + cols)
        return in_rows[:, :, None] & in_cols[:, None, :]

    def _place_context(self, shape: tuple[int, int], targets: torch.Tensor) -> torch.Tensor:
        """One context per image, bool [B, H, W], given ``targets`` bool [M, B, H, W]: a block
        minus the targets still enforced, redrawn until it keeps more than ``min_keep``."""
        n_targets, batch = targets.shape[:2]
        if self.cfg.allow_overlap:
            return self._place(shape, batch)
        hidden = targets.any(0)  # per image, the union of the targets still enforced
        context = torch.zeros_like(hidden)
        done = torch.zeros(batch, dtype=torch.bool)
        enforced = [n_targets] * batch
        failures = torch.zeros(batch, dtype=torch.long)
        while not bool(done.all()):
            # Every image draws a corner each round (masks instead of index lists: cheaper).
            block = self._place(shape, batch) & ~hidden
            ok = ~done & (block.flatten(1).sum(1) > self.cfg.min_keep)
            context = torch.where(ok[:, None, None], block, context)
            done |= ok
            failures += (~done).long()
            for b in torch.nonzero(failures == RELAX_AFTER).flatten().tolist():
                enforced[b] -= 1  # drop the last target still enforced
                hidden[b] = targets[:enforced[b], b].any(0)
                failures[b] = 0
                # Warn once per sampler; ``relaxations`` keeps the count.
                logger.log(logging.DEBUG if self.relaxations else logging.WARNING,
                           "no context with more than %d patches in %d draws: dropped the "
                           "constraint of target %d (counted in MultiBlockMasker.relaxations)",
                           self.cfg.min_keep, RELAX_AFTER, enforced[b])
                self.relaxations += 1
        return context


def _first_indices(masks: torch.Tensor) -> list[torch.Tensor]:
    """bool [n, B, H, W] -> n LongTensors [B, K]: each mask's first K patch indices in raster
    order, K the fewest patches of any of the n*B masks."""
    flat = masks.flatten(2)
    keep = int(flat.sum(2).min())
    order = torch.sort((~flat).to(torch.uint8), dim=2, stable=True).indices
    return list(order[..., :keep].contiguous().unbind(0))
