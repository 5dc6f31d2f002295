"""Model specs: how ``--ckpt`` values name a backbone (a file, ``hf:ORG/NAME``, ``hf-hub:ORG/NAME``,
``timm:NAME[.TAG]``, ``random:PATH``, ``pixels:SIZE``; ``NAME=PATH`` gives it a display name) and how
each is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jepa_eval.backbones.backbone import Backbone
from jepa_eval.backbones.baselines import PixelBackbone, reinitialize
from jepa_eval.backbones.hub import HF_PREFIXES
from jepa_eval.backbones.load import load_backbone

@dataclass
class ModelSpec:
    """How to build one backbone: the ``--ckpt`` family of options."""

    ckpt: str
    name: str | None = None
    ckpt_key: str | None = None
    num_heads: int | None = None
    weights: str | None = None
    image_size: int | None = None
    trust_checkpoint: bool = False
    seed: int = 0
    download: bool = False  # fetch hub files and timm tags missing from the local caches

    def load(self) -> Backbone:
        """The backbone; ``random:PATH`` is PATH's architecture with freshly initialised weights,
        ``pixels:SIZE`` the raw-pixel baseline at SIZE x SIZE pixels."""
        if self.ckpt.startswith("pixels:"):
            return PixelBackbone.at(self.ckpt)
        random_like = self.ckpt.startswith("random:")
        source = self.ckpt[len("random:"):] if random_like else self.ckpt
        backbone = load_backbone(source, ckpt_key=self.ckpt_key, num_heads=self.num_heads,
                                 weights=self.weights, image_size=self.image_size,
                                 trust_checkpoint=self.trust_checkpoint, seed=self.seed, download=self.download)
        return reinitialize(backbone, self.seed) if random_like else backbone

    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.ckpt.startswith(("timm:", *HF_PREFIXES)):
            return self.ckpt
        return Path(self.ckpt).name.split(".pth")[0].split(".pt")[0]


def parse_model_specs(entries: list[str], ckpt_key: str | None, trust: bool, seed: int,
                      download: bool = False) -> list[ModelSpec]:
    """``NAME=PATH`` (or just PATH) values of ``--ckpt``: a name has no ``:``, ``/`` or ``\\``, so
    ``timm:vit_small`` and paths with ``=`` in a folder name are never split."""
    specs = []
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or any(ch in name for ch in ":/\\"):
            name, path = None, entry
        specs.append(ModelSpec(ckpt=path, name=name, ckpt_key=ckpt_key, trust_checkpoint=trust, seed=seed,
                               download=download))
    return specs
