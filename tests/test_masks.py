"""Specification of the multi-block mask sampler: shapes, statistics, the official quirks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ijepa.config import MaskConfig
from ijepa.masks import MultiBlockMasker, block_shape, context_floor
from jepa_eval.core.errors import JepaEvalError

OFFICIAL = MaskConfig()  # the official ViT-H/14 mask settings: patch 14, 224 px -> 16 x 16


def masker(input_size: int | tuple[int, int] = 224, seed: int = 0, **changes) -> MultiBlockMasker:
    return MultiBlockMasker(dataclasses.replace(OFFICIAL, **changes), input_size, seed=seed)


def coverage(m: MultiBlockMasker, batches: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """How often each patch was in a context and in a target: two [H, W] count arrays."""
    height, width = m.grid
    ctx, tgt = np.zeros(height * width), np.zeros(height * width)
    for _ in range(batches):
        contexts, targets = m.sample(batch_size)
        for idx in contexts:
            np.add.at(ctx, idx.flatten().numpy(), 1)
        for idx in targets:
            np.add.at(tgt, idx.flatten().numpy(), 1)
    return ctx.reshape(height, width), tgt.reshape(height, width)


def rectangle(indices: torch.Tensor, width: int) -> tuple[int, int, int]:
    """(top, rows, cols) of the rectangle that the raster indices fill exactly."""
    rows, cols = indices // width, indices % width
    shape = (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1)
    assert shape[0] * shape[1] == len(indices), "indices do not fill a rectangle"
    return int(rows.min()), *shape


def target_shapes(m: MultiBlockMasker, batches: int) -> np.ndarray:
    """(rows, cols) of the one target shape of each of ``batches`` batches: [batches, 2]."""
    return np.array([rectangle(m.sample(1)[1][0][0], m.grid[1])[1:] for _ in range(batches)])


def test_block_shape_follows_the_official_formula() -> None:
    # n = int(256 * 0.15) = 38 patches; rows = round(sqrt(38 * 1.5)) = 8, cols = round(sqrt(38 / 1.5)) = 5
    assert block_shape(0.15, 1.5, (16, 16)) == (8, 5)
    assert block_shape(0.2, 1.0, (16, 16)) == (7, 7)
    assert block_shape(1.0, 1.0, (16, 16)) == (16, 16)
    assert block_shape(1.0, 1.0, (16, 16), official_quirks=True) == (15, 15)
    assert block_shape(0.001, 1.0, (16, 16)) == (1, 1)
    assert context_floor(OFFICIAL, (16, 16)) == 15 * 15  # int(256 * 0.85) = 217 -> 15 x 15


def test_sample_returns_equal_length_sorted_index_tensors() -> None:
    m = masker()
    contexts, targets = m.sample(8)
    assert m.grid == (16, 16)
    assert len(contexts) == 1 and len(targets) == 4
    for idx in contexts + targets:
        assert idx.dtype == torch.long and idx.shape[0] == 8
        assert idx.min() >= 0 and idx.max() < 256
        assert bool((idx[:, 1:] > idx[:, :-1]).all())
    assert len({t.shape for t in targets}) == 1
    assert contexts[0].shape[1] > OFFICIAL.min_keep


def test_targets_of_a_batch_are_rectangles_of_one_shape() -> None:
    m = masker()
    for _ in range(5):
        _, targets = m.sample(6)
        shapes = {rectangle(row, 16)[1:] for t in targets for row in t}
        assert len(shapes) == 1


def test_every_patch_is_reachable_without_quirks() -> None:
    ctx, tgt = coverage(masker(), batches=10, batch_size=32)
    assert (tgt > 0).all() and (ctx > 0).all()
    assert tgt[-1].sum() > 0 and tgt[:, -1].sum() > 0


def test_official_quirks_never_reach_the_last_row_or_column() -> None:
    ctx, tgt = coverage(masker(official_quirks=True), batches=10, batch_size=32)
    for counts in (ctx, tgt):
        assert counts[-1].sum() == 0 and counts[:, -1].sum() == 0
    assert (tgt[:15, :15] > 0).all()


def test_official_quirks_context_is_always_the_top_left_block() -> None:
    top_left = torch.tensor([r * 16 + c for r in range(15) for c in range(15)])
    contexts, _ = masker(official_quirks=True, allow_overlap=True).sample(16)
    assert all(torch.equal(row, top_left) for row in contexts[0])
    fixed, _ = masker(allow_overlap=True).sample(64)
    assert not all(torch.equal(row[:225], top_left) for row in fixed[0])


def test_target_sizes_and_aspect_ratios_span_their_ranges() -> None:
    m = masker(input_size=256, patch_size=4, num_pred_masks=1)  # 64 x 64 grid
    shapes = target_shapes(m, batches=400)
    scale = shapes.prod(1) / 64**2
    aspect = shapes[:, 0] / shapes[:, 1]
    assert scale.min() >= 0.15 - 0.01 and scale.max() <= 0.2 + 0.01
    assert scale.min() < 0.155 and scale.max() > 0.195
    assert aspect.min() >= 0.75 - 0.1 and aspect.max() <= 1.5 + 0.1  # rounding to whole patches
    assert aspect.min() < 0.8 and aspect.max() > 1.4


@pytest.mark.parametrize("quirks", [False, True])
def test_aspect_ratio_is_independent_of_scale_unless_quirks(quirks: bool) -> None:
    m = masker(input_size=256, patch_size=4, num_pred_masks=1, official_quirks=quirks)
    shapes = target_shapes(m, batches=600)
    r = np.corrcoef(shapes.prod(1), np.log(shapes[:, 0] / shapes[:, 1]))[0, 1]
    if quirks:
        assert r > 0.95  # one draw sets both: the largest blocks are always the tallest
    else:
        assert abs(r) < 0.12


def test_context_excludes_every_target_when_overlap_is_not_allowed() -> None:
    m = masker()
    for _ in range(4):
        contexts, targets = m.sample(32)
        for b in range(32):
            hidden = set(torch.cat([t[b] for t in targets]).tolist())
            assert hidden.isdisjoint(contexts[0][b].tolist())
    assert m.relaxations == 0


def test_context_is_a_whole_block_when_overlap_is_allowed() -> None:
    contexts, targets = masker(allow_overlap=True, official_quirks=True).sample(16)
    overlaps = [len(set(contexts[0][b].tolist()) & set(targets[0][b].tolist())) for b in range(16)]
    assert contexts[0].shape[1] == 225 and max(overlaps) > 0


def test_min_keep_is_honoured_by_dropping_the_last_targets_first() -> None:
    # 8 x 8 grid, the context is the whole grid, 4 targets of 3 x 3: keeping more than 40
    # patches is impossible whenever the 4 targets cover 24 or more, so constraints are dropped;
    # the first two targets (at most 18 patches) are never dropped.
    m = masker(input_size=32, patch_size=4, enc_mask_scale=(1.0, 1.0), pred_mask_scale=(0.2, 0.2),
               aspect_ratio=(1.0, 1.0), min_keep=40)
    for _ in range(3):
        contexts, targets = m.sample(16)
        assert contexts[0].shape[1] > 40
        for b in range(16):
            assert set(targets[0][b].tolist()).isdisjoint(contexts[0][b].tolist())
            assert set(targets[1][b].tolist()).isdisjoint(contexts[0][b].tolist())
    assert m.relaxations > 0


def test_min_keep_that_no_context_can_meet_is_rejected() -> None:
    with pytest.raises(JepaEvalError, match="min_keep"):
        masker(input_size=32, patch_size=4, enc_mask_scale=(1.0, 1.0), min_keep=64)


def test_image_size_must_be_a_multiple_of_the_patch_size() -> None:
    with pytest.raises(JepaEvalError, match="patch_size 14"):
        masker(input_size=225)


def test_non_square_images_use_a_rectangular_grid() -> None:
    m = masker(input_size=(32, 48), patch_size=8, min_keep=2)
    contexts, targets = m.sample(4)
    assert m.grid == (4, 6)
    assert max(int(i.max()) for i in contexts + targets) < 24


def test_several_context_masks_share_one_length() -> None:
    contexts, _ = masker(num_enc_masks=2).sample(8)
    assert len(contexts) == 2 and contexts[0].shape == contexts[1].shape


def test_same_seed_gives_same_masks_and_another_seed_differs() -> None:
    a, b, c = masker(seed=1).sample(8), masker(seed=1).sample(8), masker(seed=2).sample(8)
    assert all(torch.equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a[1], c[1]))


def test_state_dict_resumes_the_exact_sequence(tmp_path) -> None:
    first = masker(seed=3)
    first.sample(8)
    torch.save(first.state_dict(), tmp_path / "masks.pt")
    expected = [first.sample(8) for _ in range(3)]
    resumed = masker(seed=99)
    resumed.load_state_dict(torch.load(tmp_path / "masks.pt", weights_only=True))
    for want, got in zip(expected, (resumed.sample(8) for _ in range(3))):
        assert all(torch.equal(x, y) for x, y in zip(want[0] + want[1], got[0] + got[1]))


def test_unreadable_state_is_rejected() -> None:
    with pytest.raises(JepaEvalError, match="generator"):
        masker().load_state_dict({"seed": 3})
