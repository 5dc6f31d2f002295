"""MAE: training and fine-tuning files (``model``), or flat ones with a decoder or a mask token [1, 1, D]."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jepa_eval.backbones.files import register_family
from jepa_eval.backbones.files import is_state_dict, state_names

@register_family("mae", title="MAE", entries=("model",), ignore=("decoder_", "mask_token", "head."))
def _is_mae(top: Mapping[str, Any]) -> bool:
    """A training or fine-tuning file (``model``) or a flat one with a decoder or a
    mask token [1, 1, D]."""
    if is_state_dict(top.get("model")):
        return True
    names = state_names(top)
    mask = names.get("mask_token")
    return any(k.startswith("decoder_") for k in names) or (mask is not None and mask.ndim == 3)
