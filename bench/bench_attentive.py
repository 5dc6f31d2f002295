"""Attentive probe: a grid of 16 probes trained at once against one probe alone, and cached patch
tokens against the backbone in the loop.

Grid (random float16 tokens [N, T, D] in memory, the same batches for every run; ``vjepa``
probes with the encoder's heads):

- ours, 16 at once: ``train_probe_grid`` with 4 learning rates x 4 weight decays;
- ours, one alone: the same with a 1-probe grid;
- reference, one alone: one probe as the references compute it (nn.Linear keys and values of
  every token, torch.optim.AdamW, clip_grad_norm_; tests/reference_probes.py).

Target: 16 probes in at most 3x the time of one (both baselines shown).

Feeding (the digits images at the model's size, a random ViT, the same grid and epochs,
``attentive_probe`` end to end):

- cached: the patch tokens extracted once into a fresh token cache, then every epoch read from
  it (extraction included in the time);
- in the loop: the backbone run on every batch of every epoch (un-augmented, so both compute
  the same numbers, checked).

No target: the row gives the speed-up of caching.

Usage: ``python bench/bench_attentive.py [--quick] [--repeats R] [--out DIR]``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer

from benchlib import Row, bench_main, interleaved_medians, make_row
from jepa_eval.backbones.backbone import Backbone
from jepa_eval.data import build_dataset, eval_transform
from jepa_eval.features.splits import ExtractOptions
from jepa_eval.features.stream import StreamedTokens
from jepa_eval.features.token_splits import split_tokens
from jepa_eval.features.tokens import TokenArray, TokenLayout
from jepa_eval.protocols.attentive import AttentiveConfig, AttentiveResult, attentive_probe
from jepa_eval.protocols.attentive_probes import ProbeGrid, parameter_count
from jepa_eval.protocols.attentive_training import train_probe_grid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_probes import reference_probe, train_reference  # noqa: E402

GRID = {"full": {"samples": 2048, "tokens": 196, "dim": 384, "heads": 6, "classes": 100, "batch": 256,
                 "epochs": 1, "repeats": 3},  # ViT-S/16 at 224 px
        "quick": {"samples": 256, "tokens": 16, "dim": 64, "heads": 1, "classes": 10, "batch": 64,
                  "epochs": 1, "repeats": 1}}
FEED = {"full": {"arch": {"img_size": 224, "patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3},
                 "epochs": 3, "repeats": 1},  # ViT-Ti/16 at 224 px on 1,797 digits
        "quick": {"arch": {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2},
                  "epochs": 2, "repeats": 1}}
CPU = torch.device("cpu")


def grid_config(size: dict, rates: int, decays: int) -> AttentiveConfig:
    return AttentiveConfig(heads=size["heads"], epochs=size["epochs"], batch_size=size["batch"], warmup_fraction=0.0,
                           learning_rates=tuple(1e-3 * (i + 1) for i in range(rates)),
                           weight_decays=tuple(1e-3 * (i + 1) for i in range(decays)))


def grid_rows(size: dict, reps: int) -> list[Row]:
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(size["samples"], size["tokens"], size["dim"])).astype(np.float16)
    labels = rng.integers(0, size["classes"], size["samples"])
    batches = TokenArray(tokens, labels).batches(np.arange(size["samples"]), size["batch"], train=True, seed=0)
    grid, single = grid_config(size, 4, 4), grid_config(size, 1, 1)
    arch = single.arch(size["dim"], size["classes"])

    def ours(config: AttentiveConfig):
        probes = ProbeGrid(arch, len(config.grid()))
        return lambda: train_probe_grid(probes, batches, config.optimisation(), CPU)

    def reference() -> None:
        model = reference_probe("vjepa", size["dim"], size["classes"], arch.heads)
        train_reference(model, batches, size["epochs"], lr=1e-3, wd=1e-3, start_lr=1e-3, final_lr=0.0,
                        warmup_steps=0, final_wd=None, betas=(0.9, 0.999), clip=1.0)

    seconds, _ = interleaved_medians({"grid": ours(grid), "one": ours(single), "reference": reference}, reps)
    case = (f"vjepa, {size['samples']} x {size['tokens']} tokens x {size['dim']}, {arch.heads} heads, "
            f"batch {size['batch']}, {len(batches) * size['epochs']} steps")
    note = f"cost ratio; {parameter_count(arch):,} parameters a probe"
    miss = "on a CPU every probe's cross-attention, MLP and AdamW update is real arithmetic"
    return [make_row("attentive", case, "16 probes at once", "ours, one probe alone", "s", seconds["grid"],
                     seconds["one"], seconds["grid"] / seconds["one"], "<= 3.0", reps, note, miss_note=miss),
            make_row("attentive", case, "16 probes at once", "reference-style probe, one alone", "s",
                     seconds["grid"], seconds["reference"], seconds["grid"] / seconds["reference"], "<= 3.0", reps,
                     note + "; the reference computes keys and values of every token", miss_note=miss)]


def random_backbone(arch: dict) -> Backbone:
    """A seeded random timm ViT without class token, as a loaded backbone."""
    torch.manual_seed(0)
    model = VisionTransformer(**arch, class_token=False, global_pool="avg", num_classes=0).eval()
    full = {**arch, "class_token": False, "num_reg_tokens": 0, "init_values": None, "fc_norm": False,
            "mlp_ratio": 4.0}
    return Backbone(model=model, family="timm", source="bench", ckpt_key=None, sha256="bench-random-vit",
                    arch=full, default_mode="avgpool")


def feed_rows(size: dict, reps: int) -> list[Row]:
    backbone = random_backbone(size["arch"])
    config = AttentiveConfig(learning_rates=(1e-3, 2e-3, 3e-3, 4e-3), weight_decays=(1e-3, 2e-3, 4e-3, 8e-3),
                             epochs=size["epochs"], batch_size=128)
    image_size = backbone.image_size

    def cached() -> AttentiveResult:
        folder = Path(tempfile.mkdtemp(prefix="bench-attentive-"))
        try:
            options = ExtractOptions(device="cpu", cache_dir=str(folder), progress=False, batch_size=128)
            train, test = split_tokens(backbone, "digits", ["train", "test"], TokenLayout(), options)
            return attentive_probe(train.source, test.source, config, device=CPU)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def in_loop() -> AttentiveResult:
        sources = []
        for split, augment in (("train", eval_transform(image_size, "digits")), ("test", None)):
            images = build_dataset("digits", split, transform=lambda image: image)
            sources.append(StreamedTokens(backbone, images, np.asarray(images.targets), TokenLayout(),
                                          eval_transform(image_size, "digits"), augment, CPU))
        return attentive_probe(*sources, config, device=CPU)

    # no warm-up calls: each run is long, and a warm-up would double the bench's time
    seconds, out = interleaved_medians({"cached": cached, "loop": in_loop}, reps,
                                       warmups={"cached": lambda: None, "loop": lambda: None})
    same = out["cached"].top1 == out["loop"].top1
    arch = size["arch"]
    case = (f"ViT {arch['embed_dim']}x{arch['depth']}/{arch['patch_size']} at {arch['img_size']}px, digits "
            f"(1,437 + 360), {len(config.grid())} probes, {config.epochs} epochs")
    return [make_row("attentive", case, "cached tokens (extraction included)", "backbone in the loop", "s",
                     seconds["cached"], seconds["loop"], seconds["loop"] / seconds["cached"], "", reps,
                     f"speed-up; top-1 cached {out['cached'].top1:.2f}% vs in the loop {out['loop'].top1:.2f}% "
                     f"({'same' if same else 'DIFFERENT'})")]


def run(quick: bool, repeats: int | None) -> list[Row]:
    name = "quick" if quick else "full"
    grid, feed = GRID[name], FEED[name]
    return grid_rows(grid, repeats or grid["repeats"]) + feed_rows(feed, repeats or feed["repeats"])


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main("attentive", run, __doc__, argv)


if __name__ == "__main__":
    main()
