"""Model files in the exact on-disk layouts of the Hugging Face hub cache and of torch hub, and a
tiny timm ViT registered with pretrained tags, so that tests resolve ``hf:``, ``hf-hub:`` and
``timm:ARCH.TAG`` without any network.

Hub cache layout (what ``huggingface_hub`` writes): ``<cache>/models--ORG--NAME/blobs/<sha256>``
holds each file's bytes, ``snapshots/<commit>/<file>`` is a relative symlink to its blob and
``refs/<branch or tag>`` holds the commit.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

TINY_IJEPA_URL = "https://dl.fbaipublicfiles.com/ijepa/IN1K-vit.test.8-32px.pth.tar"  # never fetched
TINY_HUB_TAG = "vit_test_32.tiny_hub"  # its weights: the hub repository timm/vit_test_32.tiny_hub
TINY_IJEPA_TAG = "vit_test_gap_32.tiny_ijepa"  # its weights: the official-layout file at TINY_IJEPA_URL
_TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}

default_cfgs = generate_default_cfgs({
    TINY_HUB_TAG: {"hf_hub_id": "timm/", "num_classes": 0, "input_size": (3, 32, 32),
                   "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    TINY_IJEPA_TAG: {"url": TINY_IJEPA_URL, "num_classes": 0, "input_size": (3, 32, 32),
                     "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
})


@register_model
def vit_test_32(pretrained: bool = False, **kwargs: object) -> VisionTransformer:
    """A 32 px, patch-8, width-32, depth-2 ViT with a class token."""
    return build_model_with_cfg(VisionTransformer, "vit_test_32", pretrained,
                                pretrained_filter_fn=checkpoint_filter_fn, **{**_TINY, **kwargs})


@register_model
def vit_test_gap_32(pretrained: bool = False, **kwargs: object) -> VisionTransformer:
    """The same shape without a class token, average-pooled (the shape of timm's I-JEPA ports)."""
    return build_model_with_cfg(VisionTransformer, "vit_test_gap_32", pretrained,
                                pretrained_filter_fn=checkpoint_filter_fn,
                                **{**_TINY, "class_token": False, "global_pool": "avg", "fc_norm": False, **kwargs})


def hub_cache_entry(cache: Path, repo_id: str, files: dict[str, Path], *, commit: str,
                    refs: tuple[str, ...] = ("main",)) -> Path:
    """Put ``files`` (name in the repository -> local file) into ``cache`` as a snapshot of
    ``repo_id`` at ``commit``, with ``refs`` pointing at it; return the snapshot folder."""
    folder = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    for name, source in files.items():
        data = source.read_bytes()
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return snapshot
