"""Baselines every representation should beat: raw pixels, and a checkpoint's architecture with
fresh random weights."""

from __future__ import annotations

import torch

from jepa_eval.backbones.backbone import Backbone
from jepa_eval.core.errors import JepaEvalError

class RawPixels(torch.nn.Module):
    """The raw-pixel baseline: an image [B, 3, S, S] becomes its flattened pixels [B, 3·S·S]."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


class PixelBackbone(Backbone):
    """Raw pixels as features: the baseline every representation should beat."""

    @classmethod
    def at(cls, spec: str) -> PixelBackbone:
        size_text = spec.removeprefix("pixels:")
        if not size_text.isdigit() or int(size_text) < 1:
            raise JepaEvalError(f"bad raw-pixel spec {spec!r}", expected="pixels:SIZE, e.g. pixels:32")
        size = int(size_text)
        arch = {"img_size": size, "patch_size": size, "embed_dim": 3 * size * size, "depth": 0,
                "num_heads": 0, "class_token": False, "num_reg_tokens": 0, "init_values": None,
                "fc_norm": False, "mlp_ratio": 0.0}
        return cls(model=RawPixels(size).eval(), family="pixels", source=spec, ckpt_key=None,
                   sha256=spec, arch=arch, default_mode="pixels")

    def describe(self) -> str:
        return f"raw pixels at {self.image_size}x{self.image_size} ({self.arch['embed_dim']} values per image)"


def reinitialize(backbone: Backbone, seed: int) -> Backbone:
    """The same architecture, freshly initialised as I-JEPA/timm do: trunc-normal(0.02) on every
    linear and the patch projection, zero biases, LayerNorms reset to weight 1, bias 0.

    Fixed sin-cos position embeddings (I-JEPA) are kept: they are not learned weights.
    """

    def init(module: torch.nn.Module) -> None:
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            torch.nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.LayerNorm):
            module.reset_parameters()

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        backbone.model.apply(init)
        for name in ("cls_token", "reg_token"):
            token = getattr(backbone.model, name, None)
            if token is not None:
                torch.nn.init.normal_(token, std=1e-6)
    finally:
        torch.random.set_rng_state(generator_state)
    backbone.sha256 = f"random-like:{backbone.sha256}:seed{seed}"
    backbone.source = f"random:{backbone.source}"
    return backbone
