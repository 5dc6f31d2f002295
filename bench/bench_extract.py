"""Extraction: images per second of ``extract_features`` against a bare timm forward loop.

Same model (a timm ViT without class token, random weights, eval mode), same images (a
tensor dataset of random normalised pixels, so decoding does not enter), same DataLoader
settings (batch size, no workers, no shuffle), same output (average-pooled patch tokens after
the final norm, checked equal):

- ours: ``jepa_eval.features.extract.extract_features(model, dataset, 'avgpool')``;
- bare: ``for images, _ in loader: model.forward_features(images).mean(1)`` under
  ``torch.inference_mode`` (bf16 autocast on CUDA for both).

Target: ours at least 0.9x the bare loop's throughput.

Usage: ``python bench/bench_extract.py [--quick] [--repeats R] [--out DIR]``.
"""

from __future__ import annotations

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader, TensorDataset

from benchlib import Row, bench_main, interleaved_medians, make_row
from jepa_eval.features.extract import extract_features

FULL = {"arch": {"img_size": 224, "patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3},
        "images": 64, "batch": 32, "repeats": 3}
QUICK = {"arch": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
         "images": 32, "batch": 16, "repeats": 1}


def bare_loop(model: VisionTransformer, dataset: TensorDataset, batch: int, device: torch.device) -> np.ndarray:
    """Average-pooled final-norm patch tokens [N, D] by a plain timm forward loop."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0,
                        pin_memory=device.type == "cuda")
    rows = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for images, _ in loader:
            rows.append(model.forward_features(images.to(device, non_blocking=True)).mean(dim=1).float().cpu())
    return torch.cat(rows).numpy()


def run(quick: bool, repeats: int | None) -> list[Row]:
    size = QUICK if quick else FULL
    reps = repeats or size["repeats"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = VisionTransformer(**size["arch"], class_token=False, global_pool="avg", num_classes=0)
    model.eval().to(device)
    side = size["arch"]["img_size"]
    dataset = TensorDataset(torch.randn(size["images"], 3, side, side), torch.zeros(size["images"], dtype=torch.long))
    batch = size["batch"]
    seconds, out = interleaved_medians({
        "ours": lambda: extract_features(model, dataset, "avgpool", batch_size=batch, device=device, progress=False),
        "bare": lambda: bare_loop(model, dataset, batch, device),
    }, reps)
    same = np.allclose(out["ours"].features, out["bare"], atol=1e-2 if device.type == "cuda" else 1e-5)
    ours_rate, bare_rate = size["images"] / seconds["ours"], size["images"] / seconds["bare"]
    arch = size["arch"]
    case = (f"ViT {arch['embed_dim']}x{arch['depth']}/{arch['patch_size']} at {side}px, "
            f"{size['images']} images, batch {batch}, {device.type}")
    return [make_row("extract", case, "extract_features", "bare timm forward loop", "img/s", ours_rate,
                     bare_rate, ours_rate / bare_rate, ">= 0.9", reps,
                     f"throughput ratio; features equal: {'yes' if same else 'NO'}",
                     miss_note="ours runs the same forward pass plus a per-batch finiteness check and label copy",
                     also_required=same)]


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main("extract", run, __doc__, argv)


if __name__ == "__main__":
    main()
