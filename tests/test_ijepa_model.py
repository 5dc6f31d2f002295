"""The I-JEPA networks: shapes, batching order, targets, EMA, initialisation, key names."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ijepa.model import (IJEPA, MaskedEncoder, Predictor, gather_tokens, patchify, pixel_targets,
                         repeat_per_group, stack_targets, trunc_normal_, attention)
from jepa_eval.backbones.vit import build_vit

DIM, DEPTH, HEADS, PATCH, IMG = 32, 2, 4, 8, 32  # 4 x 4 grid, N = 16


def tiny(pixels: bool = False, loss: str = "smooth_l1") -> IJEPA:
    torch.manual_seed(0)
    encoder = MaskedEncoder(DIM, DEPTH, HEADS, PATCH, IMG)
    predictor = Predictor(encoder.grid, DIM, 16, 2, 2, pixel_dim=3 * PATCH**2 if pixels else None)
    return IJEPA(encoder, predictor, loss=loss, target="pixels" if pixels else "latent")


def masks(batch: int = 2) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Two context masks of 5 patches and three target blocks of 3 patches, per image."""
    g = torch.Generator().manual_seed(1)
    enc = [torch.stack([torch.randperm(16, generator=g)[:5].sort().values for _ in range(batch)]) for _ in range(2)]
    pred = [torch.stack([torch.randperm(16, generator=g)[:3].sort().values for _ in range(batch)]) for _ in range(3)]
    return enc, pred


def test_gather_tokens_stacks_each_mask_along_the_batch() -> None:
    x = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)  # token value = 4*b + n
    out = gather_tokens(x, [torch.tensor([[0, 3], [1, 2]]), torch.tensor([[2, 2], [0, 0]])])
    assert out.squeeze(-1).tolist() == [[0, 3], [5, 6], [2, 2], [4, 4]]


def test_repeat_per_group_repeats_each_block_of_batch_rows() -> None:
    x = torch.tensor([1, 2, 3, 4])  # two groups of batch 2
    assert repeat_per_group(x, batch=2, repeat=3).tolist() == [1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]


def test_encoder_state_dict_has_the_official_encoder_names_and_loads_into_timm_vit() -> None:
    encoder = MaskedEncoder(DIM, DEPTH, HEADS, PATCH, IMG)
    keys = set(encoder.state_dict())
    assert {"pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias",
            "blocks.1.attn.qkv.weight", "blocks.1.attn.proj.bias", "blocks.0.mlp.fc2.weight",
            "blocks.0.norm1.weight", "blocks.0.norm2.bias"} <= keys
    assert not any("cls" in k for k in keys)
    vit = build_vit(DIM, DEPTH, HEADS, PATCH, IMG, class_token=False)
    vit.load_state_dict(encoder.state_dict(), strict=True)
    images = torch.randn(2, 3, IMG, IMG)
    assert torch.allclose(vit.eval().forward_features(images), encoder.eval()(images), atol=1e-6)


def test_predictor_state_dict_has_the_official_predictor_names() -> None:
    keys = set(Predictor((4, 4), DIM, 16, 2, 2).state_dict())
    assert {"predictor_embed.weight", "mask_token", "predictor_pos_embed", "predictor_blocks.1.attn.qkv.weight",
            "predictor_norm.weight", "predictor_proj.weight", "predictor_proj.bias"} <= keys
    assert not any(k.startswith("pixel_head") for k in keys)


def test_position_embeddings_are_fixed_and_not_trained() -> None:
    model = tiny()
    assert not model.encoder.pos_embed.requires_grad
    assert not model.predictor.predictor_pos_embed.requires_grad


def block_outputs(model: IJEPA) -> list[tuple[int, torch.Tensor]]:
    """(layer from 1, weight) of every block's attn.proj and mlp.fc2, encoder and predictor."""
    return [(layer, w.detach()) for blocks in (model.encoder.blocks, model.predictor.predictor_blocks)
            for layer, block in enumerate(blocks, start=1) for w in (block.attn.proj.weight, block.mlp.fc2.weight)]


def deep(init: str) -> IJEPA:
    """A 64-wide, 4-deep encoder and a 32-wide, 3-deep predictor, built from seed 0."""
    torch.manual_seed(0)
    encoder = MaskedEncoder(64, 4, 4, PATCH, IMG)
    return IJEPA(encoder, Predictor(encoder.grid, 64, 32, 3, 4), init=init)


def within_sampling_error(w: torch.Tensor, std: float) -> bool:
    """The sample std of ``w`` is within 5 standard errors (std / sqrt(2n)) of ``std``."""
    return abs(float(w.std()) - std) < 5 * std / (2 * w.numel()) ** 0.5


def test_official_init_starts_every_block_at_std_002_as_the_official_init_model_leaves_it() -> None:
    model = deep("official")
    assert all(within_sampling_error(w, 0.02) for _, w in block_outputs(model))
    linears = [m for part in (model.encoder, model.predictor) for m in part.modules() if isinstance(m, torch.nn.Linear)]
    assert all(within_sampling_error(m.weight.detach(), 0.02) and not m.bias.any() for m in linears)
    conv = model.encoder.patch_embed.proj
    assert within_sampling_error(conv.weight.detach(), 0.02) and not conv.bias.any()
    assert within_sampling_error(model.predictor.mask_token.detach(), 0.02)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)


def test_rescaled_init_divides_block_l_outputs_by_sqrt_2l() -> None:
    model = deep("rescaled")
    assert all(within_sampling_error(w, 0.02 / (2 * layer) ** 0.5) for layer, w in block_outputs(model))
    qkv = model.encoder.blocks[3].attn.qkv.weight.detach()  # only the output projections are divided
    assert within_sampling_error(qkv, 0.02)


def test_trunc_normal_is_the_inverse_normal_cdf_of_one_uniform_draw_per_entry() -> None:
    torch.manual_seed(3)
    drawn = trunc_normal_(torch.empty(5000))
    after = torch.rand(1)
    torch.manual_seed(3)
    uniform = torch.empty(5000).uniform_(-1.0, 1.0)  # Φ(±2 / 0.02) = 0, 1: the bounds leave (-1, 1)
    assert torch.equal(drawn, torch.erfinv(uniform) * (0.02 * 2**0.5)) and torch.equal(torch.rand(1), after)
    assert (drawn.abs() > 0.04).sum() > 150  # bounds ±2 absolute, not ±2 std: 4.6% of 5000 lie beyond 2 std
    wide = trunc_normal_(torch.empty(5000), std=1.0)  # here the bounds ±2 cut
    assert wide.abs().max() <= 2.0 and wide.abs().max() > 1.95 and abs(float(wide.std()) - 0.88) < 0.03


def test_the_build_draws_the_official_numbers_in_the_official_order() -> None:
    """From one seed the official build draws: (1) the default init (weight, then bias) of the
    encoder's Conv2d and Linear layers as they are constructed, (2) trunc-normal of the encoder's
    Conv2d and Linear weights, (3) the predictor's default inits, (4) its mask token, (5) its
    Linear weights; then init_model's pass: (6) the encoder's Linear weights, (7) the predictor's.
    Default inits draw one number per entry, whatever their bounds."""
    d, p = 32, 16  # encoder width 32, 2 blocks; predictor width 16, 2 blocks
    conv = (d, 3, PATCH, PATCH)
    encoder_weights = [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)] * 2  # qkv, proj, fc1, fc2 a block
    predictor_weights = [(p, d), *[(3 * p, p), (p, p), (4 * p, p), (p, 4 * p)] * 2, (d, p)]

    def build(init: str) -> IJEPA:
        torch.manual_seed(7)
        return IJEPA(MaskedEncoder(d, 2, 4, PATCH, IMG), Predictor((4, 4), d, p, 2, 2), init=init)

    def default_inits(shapes: list[tuple[int, ...]]) -> None:
        for shape in shapes:
            torch.empty(shape).uniform_()
            torch.empty(shape[0]).uniform_()

    def draw(shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        return [trunc_normal_(torch.empty(shape)) for shape in shapes]

    def linears(module: torch.nn.Module) -> list[torch.Tensor]:
        return [m.weight.detach() for m in module.modules() if isinstance(m, torch.nn.Linear)]

    torch.manual_seed(7)
    default_inits([conv, *encoder_weights])
    patch_weight, class_encoder = draw([conv])[0], draw(encoder_weights)
    default_inits(predictor_weights)
    mask_token, class_predictor = draw([(1, 1, p)])[0], draw(predictor_weights)
    official_encoder, official_predictor = draw(encoder_weights), draw(predictor_weights)

    official = build("official")
    assert torch.equal(official.encoder.patch_embed.proj.weight, patch_weight)
    assert torch.equal(official.predictor.mask_token, mask_token)
    assert all(map(torch.equal, linears(official.encoder), official_encoder))
    assert all(map(torch.equal, linears(official.predictor), official_predictor))
    # rescaled stops after (5): the constructors' weights, block l's proj and fc2 divided by sqrt(2 l)
    divisors = [1.0, math.sqrt(2.0), 1.0, math.sqrt(2.0), 1.0, 2.0, 1.0, 2.0]
    rescaled = build("rescaled")
    assert torch.equal(rescaled.encoder.patch_embed.proj.weight, patch_weight)
    assert all(torch.equal(w, c / k) for w, c, k in zip(linears(rescaled.encoder), class_encoder, divisors))
    assert all(torch.equal(w, c / k)
               for w, c, k in zip(linears(rescaled.predictor), class_predictor, [1.0, *divisors, 1.0]))


def test_attention_gives_timms_result_whether_or_not_gradients_are_recorded() -> None:
    """On the CPU the product is written out when autograd records and fused when it does not."""
    attn = tiny().encoder.blocks[0].attn
    x = torch.randn(3, 7, DIM)
    expected = attn(x).detach()  # timm's module: the fused kernel
    recorded = attention(attn, x)
    assert recorded.requires_grad and torch.allclose(recorded, expected, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(attention(attn, x), expected, atol=1e-6)


def test_encoder_sees_only_the_context_patches() -> None:
    model = tiny().eval()
    images = torch.randn(2, 3, IMG, IMG)
    enc, _ = masks()
    out = model.encoder(images, enc)
    assert out.shape == (2 * 2, 5, DIM)
    changed = images.clone()
    hidden = sorted(set(range(16)) - set(enc[0][0].tolist()))
    row, col = divmod(hidden[0], 4)
    changed[0, :, row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH] += 5.0
    assert torch.equal(model.encoder(changed, enc)[0], out[0])  # image 0, context mask 0


def test_predictor_output_order_matches_a_per_block_loop() -> None:
    model = tiny().eval()
    images = torch.randn(2, 3, IMG, IMG)
    enc, pred = masks()
    context = model.encoder(images, enc)
    batched = model.predictor(context, enc, pred)
    assert batched.shape == (3 * 2 * 2, 3, DIM)
    # row (block j, context mask e, image b) equals predicting block j alone from context e
    for j in range(3):
        for e in range(2):
            alone = model.predictor(context[e * 2:(e + 1) * 2], [enc[e]], [pred[j]])
            assert torch.allclose(batched[(j * 2 + e) * 2:(j * 2 + e + 1) * 2], alone, atol=1e-5)


def test_targets_are_layer_normed_target_encoder_tokens_at_the_target_blocks() -> None:
    model = tiny().eval()
    images = torch.randn(2, 3, IMG, IMG)
    enc, pred = masks()
    targets = model.targets(images, pred, n_enc=2)
    assert targets.shape == (3 * 2 * 2, 3, DIM)
    assert torch.allclose(targets.mean(-1), torch.zeros(12, 3), atol=1e-5)
    assert torch.allclose(targets.var(-1, unbiased=False), torch.ones(12, 3), atol=1e-3)
    h = F.layer_norm(model.target_encoder(images), (DIM,))
    j, e, b = 2, 1, 1
    expected = h[b, pred[j][b]]
    assert torch.allclose(targets[(j * 2 + e) * 2 + b], expected, atol=1e-6)


def test_loss_is_smooth_l1_or_mse_of_predictions_against_targets() -> None:
    images = torch.randn(2, 3, IMG, IMG)
    enc, pred = masks()
    for name, fn in (("smooth_l1", F.smooth_l1_loss), ("l2", F.mse_loss)):
        model = tiny(loss=name).eval()
        p = model.predictor(model.encoder(images, enc), enc, pred)
        assert torch.allclose(model(images, enc, pred), fn(p, model.targets(images, pred, 2)))


class NoTruthValue(torch.nn.Module):
    """A wrapper that, like torch.compile's OptimizedModule, cannot be used as a truth value."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.inner(*args)

    def __len__(self) -> int:
        raise TypeError("no len()")


def test_forward_runs_the_given_wrapped_encoder_and_predictor() -> None:
    """run.compile passes compiled modules, which raise on bool(): they must still be used."""
    model = tiny().eval()
    images = torch.randn(2, 3, IMG, IMG)
    enc, pred = masks()
    wrapped = model(images, enc, pred, encoder=NoTruthValue(model.encoder), predictor=NoTruthValue(model.predictor))
    assert torch.equal(wrapped, model(images, enc, pred))


def test_gradients_reach_encoder_and_predictor_but_not_the_target_encoder() -> None:
    model = tiny()
    enc, pred = masks()
    model(torch.randn(2, 3, IMG, IMG), enc, pred).backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.predictor.mask_token.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.target_encoder.parameters())


def test_ema_update_moves_the_target_a_fraction_one_minus_momentum_towards_the_encoder() -> None:
    model = tiny()
    with torch.no_grad():
        for p in model.encoder.parameters():
            if p.requires_grad:
                p.add_(1.0)
    before = {k: v.clone() for k, v in model.target_encoder.state_dict().items()}
    source = model.encoder.state_dict()
    model.update_target(0.9)
    after = model.target_encoder.state_dict()
    key = "blocks.0.mlp.fc1.weight"
    assert torch.allclose(after[key], 0.9 * before[key] + 0.1 * source[key], atol=1e-6)
    assert torch.equal(after["pos_embed"], before["pos_embed"])


def test_patchify_orders_pixels_row_col_channel_in_raster_patches() -> None:
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    patches = patchify(images, 2)
    assert patches.shape == (2, 4, 12)
    # image 0, patch 1 (top-right), its first pixel (row 0, col 2) channels 0..2
    assert patches[0, 1, :3].tolist() == [images[0, c, 0, 2].item() for c in range(3)]


def test_pixel_targets_are_normalised_per_patch() -> None:
    t = pixel_targets(torch.rand(2, 3, IMG, IMG) * 7 + 3, PATCH)
    assert t.shape == (2, 16, 3 * PATCH**2)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(t.std(-1), torch.ones(2, 16), atol=1e-3)


def test_pixel_mode_predicts_normalised_pixels_of_the_target_blocks() -> None:
    model = tiny(pixels=True)
    images = torch.randn(2, 3, IMG, IMG)
    enc, pred = masks()
    targets = model.targets(images, pred, n_enc=2)
    assert targets.shape == (12, 3, 3 * PATCH**2)
    assert torch.equal(targets, stack_targets(pixel_targets(images, PATCH), pred, 2))
    loss = model(images, enc, pred)
    loss.backward()
    assert torch.isfinite(loss) and model.predictor.pixel_head.weight.grad is not None
