"""A loaded backbone: a timm ViT in eval mode and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from timm.models.vision_transformer import VisionTransformer

from jepa_eval.backbones.files import FAMILIES

@dataclass
class Backbone:
    """A loaded backbone: a timm ViT in eval mode (float32) and where it came from.

    ``arch`` holds :func:`jepa_eval.backbones.vit.build_vit` keyword arguments, so ``build_vit(**arch)``
    rebuilds the same architecture. ``notes`` records changes made while loading (such as a
    resampled position embedding); ``origin`` where the weights came from when ``source`` does
    not say it all (``file``, ``hub_id``, ``hub_revision``, ``hub_file``, ``url``).
    """

    model: VisionTransformer
    family: str
    source: str
    ckpt_key: str | None
    sha256: str
    arch: dict[str, Any]
    default_mode: str
    ignored_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    origin: dict[str, str] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.arch["img_size"])

    @property
    def has_cls(self) -> bool:
        return bool(self.arch["class_token"])

    def describe(self) -> str:
        """One line: the detected family, the entry used and the architecture found."""
        a = self.arch
        grid = a["img_size"] // a["patch_size"]
        where = f"{self.source}" + (f" ['{self.ckpt_key}']" if self.ckpt_key else "")
        tokens = "CLS token" if a["class_token"] else "no CLS token"
        if a["num_reg_tokens"]:
            tokens += f", {a['num_reg_tokens']} register tokens"
        extras = [f"MLP ratio {a['mlp_ratio']:g}"]
        if a["init_values"] is not None:
            extras.append("layer scale")
        if a["fc_norm"]:
            extras.append("norm after pooling (fc_norm)")
        extras.append(f"{len(self.ignored_keys)} keys ignored")
        text = (f"{FAMILIES[self.family].title} backbone from {where}: ViT width {a['embed_dim']}, "
                f"depth {a['depth']}, {a['num_heads']} heads, patch {a['patch_size']}, "
                f"{a['img_size']} px ({grid}x{grid} grid), {tokens}; {', '.join(extras)}; "
                f"default features '{self.default_mode}'")
        return "; ".join([text, *self.notes])
