"""Tiny models and datasets for the feature and cache tests (importable by spawned workers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import Dataset

from jepa_eval.features.extract import extract_features
from jepa_eval.features.featureset import FeatureSet

IMAGE_SIZE = 32


def tiny_vit(*, class_token: bool = True, reg_tokens: int = 0, depth: int = 4,
             seed: int = 0) -> VisionTransformer:
    """A 32 px, patch-8, width-32 ViT in eval mode with seeded random weights (16 patches)."""
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=IMAGE_SIZE, patch_size=8, embed_dim=32, depth=depth, num_heads=2,
                              num_classes=0, class_token=class_token, reg_tokens=reg_tokens,
                              global_pool="token" if class_token else "avg")
    return model.eval()


class NumberedImages(Dataset):
    """``n`` random images; sample i is seeded by i and labelled ``(7 * i) % 5``.

    The labels jump around (0, 2, 4, 1, 3...), so any reordering of rows shows.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.targets = [(7 * i) % 5 for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(1000 + index)
        return torch.randn(3, IMAGE_SIZE, IMAGE_SIZE, generator=generator), self.targets[index]


class PhotoFolder(Dataset):
    """JPEGs under ``root`` (``<class>/<file>``, sorted), as RGB tensors resized to 32 px in [0, 1]."""

    def __init__(self, root: Path) -> None:
        self.paths = sorted(root.glob("*/*.JPEG"))
        self.classes = sorted({p.parent.name for p in self.paths})
        self.targets = [self.classes.index(p.parent.name) for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        with Image.open(self.paths[index]) as image:
            pixels = np.asarray(image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0, self.targets[index]


def distributed_worker(rank: int, world: int, init_file: str, out_dir: str, n: int) -> None:
    """One rank of a gloo group: extract features of ``NumberedImages(n)`` and save rank 0's."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        result = extract_features(tiny_vit(), NumberedImages(n), "avgpool", batch_size=3,
                                  device="cpu", progress=False)
        result.save(Path(out_dir) / f"rank{rank}.npy")
    finally:
        dist.destroy_process_group()


def load_rank(out_dir: Path, rank: int) -> FeatureSet:
    return FeatureSet.load(out_dir / f"rank{rank}.npy")


def reference_rows(model: VisionTransformer, dataset: Dataset, mode: str) -> np.ndarray:
    """Features computed one image at a time through :func:`jepa_eval.features.extract.embed`."""
    from jepa_eval.features.modes import embed

    with torch.no_grad():
        return np.stack([embed(model, dataset[i][0][None], mode)[0].numpy() for i in range(len(dataset))])
