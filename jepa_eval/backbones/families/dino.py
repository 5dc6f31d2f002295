"""DINO: teacher/student training files, the backbone under ``backbone.``; the projection head ignored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jepa_eval.backbones.files import register_family
from jepa_eval.backbones.files import is_state_dict

@register_family("dino", title="DINO", entries=("teacher", "student"),
                 strip=("module.", "backbone."), ignore=("head.",))
def _is_dino(top: Mapping[str, Any]) -> bool:
    """A training file: teacher and student, backbone under ``backbone.``."""
    return is_state_dict(top.get("teacher")) or is_state_dict(top.get("student"))
