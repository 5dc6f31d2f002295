"""Checkpoint families, one module each; importing this package registers them in detection order.

DINOv2 comes before DINO (both have teacher/student entries; DINOv2 files carry extra parts), and
the timm layout, which any flat ViT with a CLS token matches, comes last.
"""

from jepa_eval.backbones.families import ijepa, dinov2, dino, mae, timm
from jepa_eval.backbones.files import FAMILIES, FamilyAdapter

__all__ = ["ijepa", "dinov2", "dino", "mae", "timm", "adapter"]


def adapter(name: str) -> FamilyAdapter:
    """The registered family ``name`` (every family module above is imported, so all are there)."""
    return FAMILIES[name]
