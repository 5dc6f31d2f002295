"""I-JEPA: official training files (encoder, predictor, target_encoder, ``module.`` prefixes), ours,
and flat encoder exports (no CLS token). The target encoder is loaded: the paper evaluates it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jepa_eval.backbones.files import register_family
from jepa_eval.backbones.files import state_names

@register_family("ijepa", title="I-JEPA", entries=("target_encoder", "encoder"),
                 default_mode="avgpool")
def _is_ijepa(top: Mapping[str, Any]) -> bool:
    """A training file (encoder, predictor, target_encoder...) or a flat encoder: no CLS."""
    if "target_encoder" in top or ("encoder" in top and "predictor" in top):
        return True
    names = state_names(top)
    return ("pos_embed" in names and "cls_token" not in names
            and not any(k.startswith("decoder_") for k in names))
