"""Loading: images per second of the real-JPEG pipeline alone against the backbone alone.

Which one bounds extraction on this machine? Both sides at the same batch size:

- decode: ``build_dataset("imagefolder:<Imagenette 160 px>", "val")`` with the evaluation
  transform (resize the short side to S x 256 / 224, bicubic, centre crop S, normalise) read
  through a ``DataLoader`` with 0, 1 and 2 worker processes (pinned memory on CUDA), every batch
  consumed, worker start-up included (it is paid once per split);
- model: the backbone's forward (``forward_features`` + average pooling, bf16 autocast on CUDA)
  on a batch of random images already on the device, the features copied back to the CPU.

``ratio`` = decode img/s / model img/s: below 1 decoding bounds extraction (add workers), above
1 the model does. No target: the row says which side is the bound.

The photographs are ``../shared/data/imagenette-160.tar.gz`` (extracted once by
``scripts/shared_data.py``); without them, ``--quick`` writes 160-px JPEGs of noise instead and says so.

Usage: ``python bench/bench_loader.py [--quick] [--repeats R] [--out DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader, Subset

from benchlib import Row, bench_main, interleaved_medians, make_row
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data import build_dataset

REPO = Path(__file__).resolve().parents[1]
FULL = {"arch": {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
        "images": 640, "batch": 64, "repeats": 3}
QUICK = {"arch": {"img_size": 64, "patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 2},
         "images": 48, "batch": 16, "repeats": 1}
WORKERS = (0, 1, 2)


def imagenette_val(quick: bool) -> tuple[Path, str]:
    """The Imagenette 160 px tree (``{train,val}/<wnid>/*.JPEG``) and what it is; in quick mode,
    without the shared archive, a tree of random 160-px JPEGs."""
    sys.path.insert(0, str(REPO))
    from scripts.shared_data import extract_shared_archive

    root = extract_shared_archive("imagenette-160", REPO / ".cache" / "shared")
    if root is not None:
        return root, "Imagenette 160 px"
    if not quick:
        raise JepaEvalError("the Imagenette photographs are missing",
                            expected="../shared/data/imagenette-160.tar.gz beside the repository",
                            found="no such file", hint="set JEPA_EVAL_SHARED to the folder holding it")
    folder = REPO / ".cache" / "bench-loader-jpegs"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i in range(QUICK["images"]):
            path = folder / split / f"n{i % 2:08d}" / f"{i:04d}.JPEG"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (160, 213, 3), dtype=np.uint8)).save(path, quality=90)
    return folder, "random 160-px JPEGs (no shared Imagenette)"


def decode(dataset: Subset, batch: int, workers: int, device: torch.device) -> int:
    """Read every batch of ``dataset`` through a DataLoader; the number of images read."""
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda")
    return sum(len(images) for images, _ in loader)


def forward(model: VisionTransformer, images: torch.Tensor, device: torch.device) -> np.ndarray:
    """Average-pooled final-norm tokens of one batch, back on the CPU."""
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return model.forward_features(images).mean(dim=1).float().cpu().numpy()


def run(quick: bool, repeats: int | None) -> list[Row]:
    size = QUICK if quick else FULL
    reps = repeats or size["repeats"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    root, source = imagenette_val(quick)
    side, batch = size["arch"]["img_size"], size["batch"]
    data = build_dataset(f"imagefolder:{root}", "val", image_size=side)
    images = Subset(data, range(min(size["images"], len(data))))
    torch.manual_seed(0)
    model = VisionTransformer(**size["arch"], class_token=False, global_pool="avg", num_classes=0).eval().to(device)
    noise = torch.randn(batch, 3, side, side, device=device)
    batches = -(-len(images) // batch)
    candidates = {f"decode-{w}": (lambda w=w: decode(images, batch, w, device)) for w in WORKERS}
    candidates["model"] = lambda: [forward(model, noise, device) for _ in range(batches)]
    first = Subset(images, range(min(batch, len(images))))
    warmups = {f"decode-{w}": (lambda w=w: decode(first, batch, w, device)) for w in WORKERS}
    warmups["model"] = lambda: forward(model, noise, device)
    seconds, _ = interleaved_medians(candidates, reps, warmups=warmups)
    model_rate = batches * batch / seconds["model"]
    arch = size["arch"]
    case = (f"{source}, {len(images)} images, {side}px, batch {batch}; ViT {arch['embed_dim']}x{arch['depth']}"
            f"/{arch['patch_size']}, {device.type}")
    rows = []
    for w in WORKERS:
        rate = len(images) / seconds[f"decode-{w}"]
        bound = "decode bounds extraction" if rate < model_rate else "the model bounds extraction"
        rows.append(make_row("loader", case, f"JPEG decode + eval transform, {w} workers", "backbone forward alone",
                             "img/s", rate, model_rate, rate / model_rate, "", reps,
                             f"decode / model throughput: {bound}"))
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main("loader", run, __doc__, argv)


if __name__ == "__main__":
    main()
