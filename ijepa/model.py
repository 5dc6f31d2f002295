"""The I-JEPA networks: a masked ViT encoder, its EMA target copy, and the narrow predictor.

Shapes: B images, N = grid_h·grid_w patches, D encoder width, P predictor width,
K_c context patches and K_t target patches per block (the same for every image of a batch),
E context masks and M target blocks per image (``num_enc_masks``, ``num_pred_masks``).

Batching follows the official code: the encoder applied to E context masks returns the E
views stacked along the batch, [E·B, K_c, D] in mask-major order; the predictor repeats
that stack once per target block, so its output is [M·E·B, K_t, D] ordered (block, context
mask, image), and :func:`stack_targets` lays the targets out in the same order.

Parameter names are the official / timm ones, so a state dict of :class:`MaskedEncoder`
with a ``module.`` prefix is exactly an official ``encoder`` / ``target_encoder`` entry,
and one of :class:`Predictor` an official ``predictor`` entry (plus ``pixel_head`` in the
pixel-target ablation).
"""

from __future__ import annotations

import copy
import math
from functools import partial

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from jepa_eval.backbones.vit import build_vit, sincos_pos_embed_2d

INIT_STD = 0.02
TRUNC_BOUND = 2.0  # the official trunc-normal's bounds: ±2 absolute, 100 std at 0.02
INIT_SCHEMES = ("official", "rescaled")
LN_EPS = 1e-6


def gather_tokens(x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """Tokens of ``x`` [B, N, C] at each mask's indices [B, K], stacked: [len(masks)·B, K, C]."""
    channels = x.shape[-1]
    return torch.cat([torch.gather(x, 1, m.unsqueeze(-1).expand(-1, -1, channels)) for m in masks])


def repeat_per_group(x: torch.Tensor, batch: int, repeat: int) -> torch.Tensor:
    """[G·B, ...] -> [G·repeat·B, ...]: each group of ``batch`` rows repeated ``repeat`` times."""
    groups = x.shape[0] // batch
    return x.reshape(groups, 1, batch, *x.shape[1:]).expand(-1, repeat, -1, *x.shape[1:]).reshape(
        groups * repeat * batch, *x.shape[1:])


def attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What a timm ``Attention`` module computes for tokens x [B, N, C]: per head
    softmax(q kᵀ / sqrt(C / heads)) v, heads concatenated, then the output projection.

    The fused kernel (``scaled_dot_product_attention``) runs off the CPU and where autograd
    records nothing (the target encoder); on the CPU, when gradients are recorded, the product
    is written out as in the official code, whose backward is faster than the fused kernel's
    on these short rows (23 tokens x 16 channels a head in the recipe's predictor: 1.3x).
    """
    b, n, c = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
    if x.device.type != "cpu" or not torch.is_grad_enabled():
        out = F.scaled_dot_product_attention(q, k, v)
    else:
        out = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(b, n, c))


def run_blocks(blocks: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x [S, T, C] through pre-norm timm blocks as built here (no layer scale, no drop path,
    no dropout), their attention computed by :func:`attention`."""
    for block in blocks:
        x = x + attention(block.attn, block.norm1(x))
        x = x + block.mlp(block.norm2(x))
    return x


def trunc_normal_(tensor: torch.Tensor, std: float = INIT_STD, bound: float = TRUNC_BOUND) -> torch.Tensor:
    """Fill ``tensor`` in place with N(0, std²) cut to [-bound, bound] (absolute bounds) the way
    the official helper draws it: the inverse normal CDF of one uniform draw per entry from the
    global torch RNG. (``torch.nn.init.trunc_normal_`` samples by rejection: other numbers.)"""
    def cdf(x: float) -> float:
        return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))

    with torch.no_grad():
        tensor.uniform_(2.0 * cdf(-bound / std) - 1.0, 2.0 * cdf(bound / std) - 1.0)
        return tensor.erfinv_().mul_(std * math.sqrt(2.0)).clamp_(-bound, bound)


def redraw_construction_init(module: nn.Module) -> None:
    """Each Conv2d's and Linear's default init again, in module order: the draws their
    construction makes in the official classes (the values are overwritten later)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.reset_parameters()


def init_layers(module: nn.Module, kinds: tuple[type[nn.Module], ...]) -> None:
    """Trunc-normal(0.02) weights and zero biases of the ``kinds`` layers, LayerNorm (1, 0),
    in module order (the official classes' ``_init_weights``, and ``init_model``'s pass)."""
    for m in module.modules():
        if isinstance(m, kinds):
            trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def rescale_block_outputs(blocks: nn.Module) -> None:
    """Each block's output projections (attn.proj, mlp.fc2) divided by sqrt(2·layer), layer
    counted from 1 (the official classes' ``fix_init_weight``)."""
    with torch.no_grad():
        for layer, block in enumerate(blocks, start=1):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer))


class MaskedEncoder(nn.Module):
    """ViT encoder without CLS token and with fixed sin-cos positions that can see a subset of
    patches: patch_embed -> + pos_embed -> gather(mask indices) -> blocks -> norm.

    Built from :func:`jepa_eval.backbones.vit.build_vit` and keeping its submodules under the same
    names, so ``state_dict()`` loads strictly into that timm ViT (``evaluate`` side).
    Initialised as the official ``VisionTransformer`` constructor leaves its weights, drawing
    the same numbers in the same order from the global torch RNG: trunc-normal(0.02) patch
    embedding and Linear weights, zero biases, block outputs divided by sqrt(2·layer).
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, patch_size: int,
                 img_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # timm's own init draws nothing that stays
            vit = build_vit(embed_dim, depth, num_heads, patch_size, img_size, class_token=False,
                            mlp_ratio=mlp_ratio, fixed_sincos=True)
        self.patch_embed = vit.patch_embed
        self.pos_embed = vit.pos_embed
        self.blocks = vit.blocks
        self.norm = vit.norm
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.grid: tuple[int, int] = tuple(vit.patch_embed.grid_size)
        redraw_construction_init(self)
        init_layers(self, (nn.Linear, nn.Conv2d))
        rescale_block_outputs(self.blocks)

    def forward(self, images: torch.Tensor, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """images [B, 3, H, W] -> [B, N, D], or [len(masks)·B, K, D] for index masks [B, K]."""
        x = self.patch_embed(images) + self.pos_embed
        if masks is not None:
            x = gather_tokens(x, masks)
        return self.norm(run_blocks(self.blocks, x))


class Predictor(nn.Module):
    """Narrow ViT that predicts the target-block representations from the context tokens.

    Each target block is predicted in its own sequence [context tokens ; one mask token per
    target position], all sequences batched together. ``pixel_dim`` adds ``pixel_head``
    (Linear D -> pixel_dim) after the usual output projection, for the pixel-target ablation.
    Initialised as the official ``VisionTransformerPredictor`` constructor leaves its weights,
    drawing the same numbers in the same order: trunc-normal(0.02) mask token, then Linear
    weights, zero biases, block outputs divided by sqrt(2·layer).
    """

    def __init__(self, grid: tuple[int, int], embed_dim: int, pred_dim: int, depth: int,
                 num_heads: int, pixel_dim: int | None = None) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=LN_EPS)
        with torch.random.fork_rng(devices=[]):  # the draws are made below, in the official order
            self.predictor_embed = nn.Linear(embed_dim, pred_dim)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, pred_dim))
            self.predictor_pos_embed = nn.Parameter(sincos_pos_embed_2d(pred_dim, grid), requires_grad=False)
            self.predictor_blocks = nn.ModuleList(
                Block(pred_dim, num_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm) for _ in range(depth))
            self.predictor_norm = norm(pred_dim)
            self.predictor_proj = nn.Linear(pred_dim, embed_dim)
            self.pixel_head = nn.Linear(embed_dim, pixel_dim) if pixel_dim else None
        redraw_construction_init(self)
        trunc_normal_(self.mask_token)
        init_layers(self, (nn.Linear, nn.Conv2d))
        rescale_block_outputs(self.predictor_blocks)

    def forward(self, context: torch.Tensor, masks_enc: list[torch.Tensor],
                masks_pred: list[torch.Tensor]) -> torch.Tensor:
        """context [E·B, K_c, D] (encoder output) -> predictions [M·E·B, K_t, D or pixel_dim]."""
        n_enc, n_pred = len(masks_enc), len(masks_pred)
        batch = context.shape[0] // n_enc
        pos = self.predictor_pos_embed.expand(batch, -1, -1)
        x = self.predictor_embed(context) + gather_tokens(pos, masks_enc)
        n_context = x.shape[1]
        target_pos = repeat_per_group(gather_tokens(pos, masks_pred), batch, n_enc)
        queries = self.mask_token.to(target_pos.dtype) + target_pos
        x = torch.cat([x.repeat(n_pred, 1, 1), queries], dim=1)
        x = run_blocks(self.predictor_blocks, x)
        x = self.predictor_proj(self.predictor_norm(x)[:, n_context:])
        return self.pixel_head(x) if self.pixel_head is not None else x


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, N, p·p·3], patches in raster order, values ordered (row, col, channel)."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


def pixel_targets(images: torch.Tensor, patch_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch normalised pixels [B, N, p·p·3] (MAE's normalised-pixel target)."""
    x = patchify(images, patch_size)
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True)
    return (x - mean) / (var + eps).sqrt()


def stack_targets(targets: torch.Tensor, masks_pred: list[torch.Tensor], n_enc: int) -> torch.Tensor:
    """Per-patch targets [B, N, C] -> [M·E·B, K_t, C], in the predictor's output order."""
    return repeat_per_group(gather_tokens(targets, masks_pred), targets.shape[0], n_enc)


class IJEPA(nn.Module):
    """Context encoder, EMA target encoder and predictor, with the I-JEPA objective.

    ``target='latent'`` regresses the target encoder's layer-normed patch features (the
    method); ``target='pixels'`` regresses per-patch-normalised pixels (the paper's ablation).

    ``init='official'`` re-draws every Linear of the freshly built encoder, then of the
    predictor, trunc-normal(0.02) with zero bias, as the official ``init_model`` does after
    building them: that undoes the constructors' division of block outputs, so every block
    starts at std 0.02, and with the constructors' draws it reproduces the official build's
    numbers from the same seed. ``init='rescaled'`` keeps the constructors' weights (block l's
    attn.proj and mlp.fc2 at std 0.02/sqrt(2·l)). The target encoder is a copy of the encoder.
    """

    def __init__(self, encoder: MaskedEncoder, predictor: Predictor, *, loss: str = "smooth_l1",
                 target: str = "latent", init: str = "official") -> None:
        super().__init__()
        if init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES}, not {init!r}")
        if init == "official":
            init_layers(encoder, (nn.Linear,))
            init_layers(predictor, (nn.Linear,))
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.loss_name = loss
        self.target = target

    @torch.no_grad()
    def targets(self, images: torch.Tensor, masks_pred: list[torch.Tensor], n_enc: int) -> torch.Tensor:
        """Regression targets [M·E·B, K_t, C] of the target blocks (no gradient)."""
        if self.target == "pixels":
            per_patch = pixel_targets(images.float(), self.encoder.patch_size)
        else:
            h = self.target_encoder(images)
            per_patch = F.layer_norm(h, (h.shape[-1],))
        return stack_targets(per_patch, masks_pred, n_enc)

    def forward(self, images: torch.Tensor, masks_enc: list[torch.Tensor],
                masks_pred: list[torch.Tensor], encoder: nn.Module | None = None,
                predictor: nn.Module | None = None) -> torch.Tensor:
        """Scalar loss of one batch. ``encoder``/``predictor`` may be DDP wrappers of ours."""
        target = self.targets(images, masks_pred, len(masks_enc))
        encoder = self.encoder if encoder is None else encoder  # not `or`: a compiled module has no truth value
        predictor = self.predictor if predictor is None else predictor
        context = encoder(images, masks_enc)
        pred = predictor(context, masks_enc, masks_pred)
        return regression_loss(pred.float(), target.float(), self.loss_name)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """EMA step: target <- momentum·target + (1 - momentum)·encoder, trained parameters."""
        pairs = [(t, s.detach()) for t, s in zip(self.target_encoder.parameters(), self.encoder.parameters())
                 if s.requires_grad]
        targets, sources = [t for t, _ in pairs], [s for _, s in pairs]
        torch._foreach_mul_(targets, momentum)
        torch._foreach_add_(targets, sources, alpha=1.0 - momentum)


def regression_loss(pred: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    """'smooth_l1' (Huber, beta 1, the official loss) or 'l2' (mean squared error), mean."""
    if name == "l2":
        return F.mse_loss(pred, target)
    return F.smooth_l1_loss(pred, target, beta=1.0)
