"""DINOv2: teacher/student files or flat backbones with a mask token [1, D], register tokens,
layer scale or DINO/iBOT heads; chunked blocks and registers converted to timm's layout."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from jepa_eval.backbones.files import StateDict, state_names, register_family

def _dinov2_markers(names: Mapping[str, Tensor]) -> bool:
    mask = names.get("mask_token")
    return ("register_tokens" in names or (mask is not None and mask.ndim == 2)
            or any(k.endswith(".ls1.gamma") or k.startswith(("dino_head.", "ibot_head."))
                   for k in names))


def _dinov2_to_timm(state: StateDict) -> StateDict:
    """Unchunk ``blocks.{chunk}.{i}.*`` to ``blocks.{i}.*``; registers to timm's layout.

    DINOv2 adds no position to its register tokens and one to the CLS token; timm's
    ``no_embed_class`` model adds positions to patches only, so the CLS position is folded
    into the CLS token (the sum the official forward computes) and dropped from pos_embed.
    """
    out = {}
    for key, value in state.items():
        chunked = re.match(r"blocks\.\d+\.(\d+\..*)$", key)
        out[f"blocks.{chunked[1]}" if chunked else key] = value
    if "register_tokens" in out:
        pos = out.pop("pos_embed")
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    return out


@register_family("dinov2", title="DINOv2", entries=("teacher", "student"),
                 strip=("module.", "backbone."), ignore=("dino_head.", "ibot_head.", "mask_token"),
                 convert=_dinov2_to_timm)
def _is_dinov2(top: Mapping[str, Any]) -> bool:
    """A teacher/student file or a flat backbone with DINOv2 parts (mask token [1, D],
    register tokens, layer scale, DINO/iBOT heads)."""
    prefixes = ("module.", "backbone.")
    return any(_dinov2_markers(state_names(top, entry, prefixes)) for entry in ("teacher", "student", None))
