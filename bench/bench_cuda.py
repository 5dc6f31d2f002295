"""The prepared GPU check: on a CUDA machine, checks and times in under five minutes what a CPU cannot show.

1. extraction (bf16 autocast) against the bare timm forward loop, ViT-B/16 at 224 px: img/s, and
   whether the features agree;
2. the linear probe on the GPU: the SGD grid (72 heads) and the exact solver (lbfgs) on 50,000
   separable 768-d features, and the low-shot solver's C path on 5,000 x 3,072: seconds;
3. the augmented linear recipe (the backbone in the loop, bf16), ViT-S/16 on digits upsampled to
   224 px: training img/s;
4. the trainer's step against the faithful official step (bench_trainer), bf16, ViT-S/16 and the
   shipped CPU recipe; ours also under ``torch.compile``: steps/s.

Each row names the card. Usage: ``python bench/bench_cuda.py [--quick] [--out DIR]`` (``--quick``
also runs on a CPU, at tiny sizes, to check the script itself). Writes ``DIR/cuda.{csv,md}``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import TensorDataset

from bench_extract import bare_loop
from bench_trainer import Case, make_steps
from benchlib import Row, bench_main, interleaved_medians, make_row
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.features.extract import extract_features
from jepa_eval.features.splits import ExtractOptions
from jepa_eval.features.stream import streamed_feature_splits
from jepa_eval.protocols import logreg
from jepa_eval.protocols.linear import LinearConfig, augmented_probe, linear_probe

FULL = {"vit": {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
        "images": 1024, "batch": 128, "rows": 50_000, "dim": 768, "lowshot": (5_000, 3_072),
        "augmented": "vit_small_patch16_224", "trainer": [
            Case("ViT-S/16 at 224 px, batch 64", {"data": {"crop_size": 224, "batch_size": 64},
                                                  "mask": {"patch_size": 16},
                                                  "meta": {"model_name": "vit_small", "pred_depth": 6}}, 5),
            Case("shipped CPU recipe (ViT 128x4, patch 4, 32 px, batch 128)", {}, 10, "configs/cifar10_tiny_30min.yaml")]}
QUICK = {"vit": {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
         "images": 64, "batch": 16, "rows": 2_000, "dim": 64, "lowshot": (300, 128),
         "augmented": "vit_tiny_patch16_224", "trainer": [
             Case("ViT-Ti/8 at 32 px, batch 2", {"data": {"crop_size": 32, "batch_size": 2}, "mask": {"patch_size": 8},
                                                 "meta": {"model_name": "vit_tiny", "pred_depth": 1}}, 1)]}


def card() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (cpu)"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def extraction(size: dict, device: torch.device, where: str) -> list[Row]:
    torch.manual_seed(0)
    model = VisionTransformer(**size["vit"], class_token=False, global_pool="avg", num_classes=0).eval().to(device)
    side = size["vit"]["img_size"]
    data = TensorDataset(torch.randn(size["images"], 3, side, side), torch.zeros(size["images"], dtype=torch.long))
    seconds, out = interleaved_medians({
        "ours": lambda: extract_features(model, data, "avgpool", batch_size=size["batch"], device=device,
                                         num_workers=0, progress=False),
        "bare": lambda: bare_loop(model, data, size["batch"], device)}, 3)
    same = np.allclose(out["ours"].features, out["bare"], atol=5e-2)
    ours, bare = size["images"] / seconds["ours"], size["images"] / seconds["bare"]
    return [make_row("cuda", f"extraction, ViT {side} px, batch {size['batch']}, {where}", "extract_features (bf16)",
                     "bare timm forward (bf16)", "img/s", ours, bare, ours / bare, ">= 0.9", 3,
                     f"features agree (bf16): {'yes' if same else 'NO'}", also_required=same)]


def probes(size: dict, device: torch.device, where: str) -> list[Row]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, size["dim"])).astype(np.float32) * 3
    labels = rng.integers(0, 10, size["rows"])
    features = (centres[labels] + rng.normal(size=(size["rows"], size["dim"]))).astype(np.float32)
    test_labels = rng.integers(0, 10, 10_000 if size["rows"] > 10_000 else 500)
    test = (centres[test_labels] + rng.normal(size=(test_labels.size, size["dim"]))).astype(np.float32)
    rows = []
    for solver in ("sgd", "lbfgs"):
        config = LinearConfig(solver=solver, epochs=10, min_steps=0, max_widenings=0)
        start = time.perf_counter()
        result = linear_probe(features, labels, test, test_labels, config, device=device, progress=False)
        _sync()
        elapsed = time.perf_counter() - start
        rows.append(make_row("cuda", f"linear --solver {solver}, {size['rows']} x {size['dim']}, {where}",
                             f"linear ({solver})", "-", "s", elapsed, elapsed, 1.0, "", 1,
                             f"top-1 {result.metrics[0].value:.2f}; {result.training}"))
    n, dim = size["lowshot"]
    x = torch.from_numpy(rng.normal(size=(n, dim)).astype(np.float32)).to(device)
    y = torch.from_numpy(rng.integers(0, 10, n)).to(device)
    order = np.random.default_rng(1).permutation(n)
    start = time.perf_counter()
    chosen = logreg.select_C(x, y, 10, logreg.DEFAULT_CS, split=(np.sort(order[n // 5:]), np.sort(order[:n // 5])))
    _sync()
    elapsed = time.perf_counter() - start
    rows.append(make_row("cuda", f"low-shot C path (23 Cs), {n} x {dim}, {where}", "logreg.select_C", "-", "s",
                         elapsed, elapsed, 1.0, "", 1, f"chosen C {chosen.C:g}"))
    return rows


def augmented(size: dict, device: torch.device, where: str) -> list[Row]:
    backbone = ModelSpec(ckpt=f"timm:{size['augmented']}").load()
    options = ExtractOptions(device=str(device), num_workers=4 if device.type == "cuda" else 0, progress=False)
    train, test = streamed_feature_splits(backbone, "digits", "avgpool", "crop", options)
    config = LinearConfig(augment="crop", solver="sgd", epochs=1, min_steps=0, learning_rates=(0.1, 1.0),
                          weight_decays=(0.0,), batch_size=256)
    start = time.perf_counter()
    result = augmented_probe(train.source, test.source, config, 10, device=device, progress=False)
    _sync()
    elapsed = time.perf_counter() - start
    images = result.training["steps"] * min(256, result.sizes["fit"])
    return [make_row("cuda", f"augmented linear, {size['augmented']}, digits at 224 px, {where}",
                     "linear --augment crop", "-", "img/s", images / elapsed, images / elapsed, 1.0, "", 1,
                     f"{result.training['steps']} steps, top-1 {result.metrics[0].value:.2f} (1 epoch)")]


def trainer(size: dict, device: torch.device, where: str) -> list[Row]:
    rows = []
    for case in size["trainer"]:
        steps, masks = make_steps(case, device)
        compiled, _ = make_steps(case, device, compile_ours=True)
        candidates = {**steps, "ours compiled": compiled["ours"]}
        seconds, _ = interleaved_medians(candidates, 3)
        rate = {name: case.steps / s for name, s in seconds.items()}
        for ours in ("ours", "ours compiled"):
            rows.append(make_row("cuda", f"trainer step, {case.name}, {where}", f"I-JEPA step ({ours})",
                                 "official step", "steps/s", rate[ours], rate["official"],
                                 rate[ours] / rate["official"], ">= 1.0", 3, masks))
    return rows


def run(quick: bool, repeats: int | None) -> list[Row]:
    size = QUICK if quick else FULL
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = card()
    return [*extraction(size, device, where), *probes(size, device, where), *augmented(size, device, where),
            *trainer(size, device, where)]


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main("cuda", run, __doc__, argv)


if __name__ == "__main__":
    main()
