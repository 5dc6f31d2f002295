"""The timm layout: a flat ViT state dict with a CLS token (also DINO's released backbones)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jepa_eval.backbones.files import register_family
from jepa_eval.backbones.files import state_names

@register_family("timm", title="timm-layout", ignore=("head.",))
def _is_timm(top: Mapping[str, Any]) -> bool:
    """A flat ViT state dict with a CLS token (timm's layout, also DINO's released backbones)."""
    return "cls_token" in state_names(top)
