"""Tiny checkpoint files in each family's exact on-disk layout, with random weights.

``make_checkpoint(family, path)`` writes what the official code of that family would save
(key names, prefixes, top-level entries, heads, decoders, predictors, optimiser state and
``args``), for a tiny ViT (width 32, depth 2, patch 8, 32 px: a 4x4 grid). Every weight,
LayerNorm and bias included, is random, so a wrongly mapped tensor changes the output.
The head count is not stored in these files (as in the official ones): pass ``num_heads``
to ``load_backbone`` for widths that are not standard.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from reference_vits import official_sincos_pos_embed

FAMILIES = ("ijepa", "mae", "dino", "dinov2", "timm")
LAYOUTS = ("train", "released", "finetuned")


def _randomise(shapes: dict[str, tuple[int, ...]], gen: torch.Generator) -> dict[str, Tensor]:
    """Random tensors: LayerNorm weights near 1, layer scales near 0.5, biases and tokens
    of std 0.1-0.5, matrices of std 1/sqrt(fan-in)."""
    out = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        if name.endswith(".weight") and len(shape) == 1:
            out[name] = 1.0 + 0.1 * noise
        elif name.endswith(".gamma"):
            out[name] = 0.5 + 0.1 * noise
        elif name.endswith(".bias"):
            out[name] = 0.1 * noise
        elif len(shape) >= 2 and name.endswith(".weight"):
            fan_in = int(torch.tensor(shape[1:]).prod())
            out[name] = noise / fan_in**0.5
        else:
            out[name] = 0.5 * noise
    return out


def _block_shapes(name: str, dim: int, hidden: int, layer_scale: bool) -> dict[str, tuple[int, ...]]:
    shapes = {
        f"{name}.norm1.weight": (dim,), f"{name}.norm1.bias": (dim,),
        f"{name}.attn.qkv.weight": (3 * dim, dim), f"{name}.attn.qkv.bias": (3 * dim,),
        f"{name}.attn.proj.weight": (dim, dim), f"{name}.attn.proj.bias": (dim,),
        f"{name}.norm2.weight": (dim,), f"{name}.norm2.bias": (dim,),
        f"{name}.mlp.fc1.weight": (hidden, dim), f"{name}.mlp.fc1.bias": (hidden,),
        f"{name}.mlp.fc2.weight": (dim, hidden), f"{name}.mlp.fc2.bias": (dim,),
    }
    if layer_scale:
        shapes[f"{name}.ls1.gamma"] = (dim,)
        shapes[f"{name}.ls2.gamma"] = (dim,)
    return shapes


def backbone_shapes(*, embed_dim: int, depth: int, patch_size: int, img_size: int,
                    cls_token: bool, num_reg_tokens: int = 0, layer_scale: bool = False,
                    chunk_size: int | None = None, final_norm: str = "norm",
                    mlp_ratio: float = 4.0) -> dict[str, tuple[int, ...]]:
    """Official backbone keys and shapes (shared by the four families' encoders).

    ``chunk_size`` names blocks ``blocks.{i // chunk}.{i}`` (DINOv2 BlockChunk);
    ``final_norm`` is 'norm' or 'fc_norm' (MAE fine-tuned with global pooling).
    """
    num_patches = (img_size // patch_size) ** 2
    shapes: dict[str, tuple[int, ...]] = {}
    if cls_token:
        shapes["cls_token"] = (1, 1, embed_dim)
    shapes["pos_embed"] = (1, num_patches + int(cls_token), embed_dim)
    if num_reg_tokens:
        shapes["register_tokens"] = (1, num_reg_tokens, embed_dim)
    shapes["patch_embed.proj.weight"] = (embed_dim, 3, patch_size, patch_size)
    shapes["patch_embed.proj.bias"] = (embed_dim,)
    for i in range(depth):
        name = f"blocks.{i // chunk_size}.{i}" if chunk_size else f"blocks.{i}"
        shapes.update(_block_shapes(name, embed_dim, int(embed_dim * mlp_ratio), layer_scale))
    shapes[f"{final_norm}.weight"] = (embed_dim,)
    shapes[f"{final_norm}.bias"] = (embed_dim,)
    return shapes


def _prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in state.items()}


def _optimizer_state() -> dict:
    return {"state": {}, "param_groups": [{"lr": 1e-3, "weight_decay": 0.04, "params": [0, 1]}]}


def _ijepa(dims: dict, gen: torch.Generator, layout: str) -> dict:
    grid = dims["img_size"] // dims["patch_size"]

    def encoder() -> dict[str, Tensor]:
        state = _randomise(backbone_shapes(**dims, cls_token=False), gen)
        state["pos_embed"] = official_sincos_pos_embed(dims["embed_dim"], grid)[None]
        return state

    target = encoder()
    if layout == "released":
        return target
    pred_dim = 16
    predictor = _randomise({
        "predictor_embed.weight": (pred_dim, dims["embed_dim"]), "predictor_embed.bias": (pred_dim,),
        "mask_token": (1, 1, pred_dim),
        **_block_shapes("predictor_blocks.0", pred_dim, 4 * pred_dim, False),
        "predictor_norm.weight": (pred_dim,), "predictor_norm.bias": (pred_dim,),
        "predictor_proj.weight": (dims["embed_dim"], pred_dim), "predictor_proj.bias": (dims["embed_dim"],),
    }, gen)
    predictor["predictor_pos_embed"] = official_sincos_pos_embed(pred_dim, grid)[None]
    return {"encoder": _prefixed("module.", encoder()), "predictor": _prefixed("module.", predictor),
            "target_encoder": _prefixed("module.", target), "opt": _optimizer_state(),
            "scaler": None, "epoch": 3, "loss": 0.42, "batch_size": 8, "world_size": 1, "lr": 1e-3}


def _mae(dims: dict, gen: torch.Generator, layout: str) -> dict:
    args = argparse.Namespace(model="mae_vit_tiny", input_size=dims["img_size"], mask_ratio=0.75)
    if layout == "finetuned":
        state = _randomise(backbone_shapes(**dims, cls_token=True, final_norm="fc_norm"), gen)
        state.update(_randomise({"head.weight": (10, dims["embed_dim"]), "head.bias": (10,)}, gen))
    else:
        state = _randomise(backbone_shapes(**dims, cls_token=True), gen)
        if layout == "train":
            dec = 16
            state.update(_randomise({
                "mask_token": (1, 1, dec), "decoder_embed.weight": (dec, dims["embed_dim"]),
                "decoder_embed.bias": (dec,), "decoder_pos_embed": (1, state["pos_embed"].shape[1], dec),
                **_block_shapes("decoder_blocks.0", dec, 4 * dec, False),
                "decoder_norm.weight": (dec,), "decoder_norm.bias": (dec,),
                "decoder_pred.weight": (3 * dims["patch_size"] ** 2, dec),
                "decoder_pred.bias": (3 * dims["patch_size"] ** 2,),
            }, gen))
    if layout == "released":
        return {"model": state}
    return {"model": state, "optimizer": _optimizer_state(), "epoch": 1,
            "scaler": {"scale": 65536.0}, "args": args}


def _dino_head(gen: torch.Generator, dim: int, prefix: str) -> dict[str, Tensor]:
    return _randomise({f"{prefix}.mlp.0.weight": (64, dim), f"{prefix}.mlp.0.bias": (64,),
                       f"{prefix}.mlp.2.weight": (16, 64), f"{prefix}.mlp.2.bias": (16,),
                       f"{prefix}.last_layer.weight_g": (128, 1),
                       f"{prefix}.last_layer.weight_v": (128, 16)}, gen)


def _dino(dims: dict, gen: torch.Generator, layout: str) -> dict:
    def backbone() -> dict[str, Tensor]:
        return _randomise(backbone_shapes(**dims, cls_token=True), gen)

    teacher = backbone()
    if layout == "released":
        return teacher
    args = argparse.Namespace(arch="vit_tiny", patch_size=dims["patch_size"], out_dim=128)
    student = {**_prefixed("module.backbone.", backbone()), **_dino_head(gen, dims["embed_dim"], "module.head")}
    return {"student": student,
            "teacher": {**_prefixed("backbone.", teacher), **_dino_head(gen, dims["embed_dim"], "head")},
            "optimizer": _optimizer_state(), "epoch": 2, "args": args,
            "dino_loss": {"center": torch.zeros(1, 128)}, "fp16_scaler": None}


def _dinov2(dims: dict, gen: torch.Generator, layout: str, num_reg_tokens: int,
            chunk_size: int | None) -> dict:
    state = _randomise(backbone_shapes(**dims, cls_token=True, num_reg_tokens=num_reg_tokens,
                                       layer_scale=True, chunk_size=chunk_size), gen)
    state["mask_token"] = torch.zeros(1, dims["embed_dim"])
    if layout == "released":
        return state
    heads = {**_dino_head(gen, dims["embed_dim"], "dino_head"), **_dino_head(gen, dims["embed_dim"], "ibot_head")}
    return {"teacher": {**_prefixed("backbone.", state), **heads}}


def _timm(dims: dict, gen: torch.Generator) -> dict[str, Tensor]:
    """The state dict of a timm VisionTransformer with a 10-class head, weights randomised."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=dims["img_size"], patch_size=dims["patch_size"],
                              embed_dim=dims["embed_dim"], depth=dims["depth"], num_heads=2,
                              num_classes=10)
    return _randomise({k: tuple(v.shape) for k, v in model.state_dict().items()}, gen)


def make_checkpoint(family: str, path: str | Path, *, embed_dim: int = 32, depth: int = 2,
                    num_heads: int = 2, patch_size: int = 8, img_size: int = 32,
                    layout: str = "train", num_reg_tokens: int = 0, chunk_size: int | None = None,
                    seed: int = 0) -> Path:
    """Write a tiny random checkpoint of ``family`` in its official layout; return ``path``.

    family: ijepa | mae | dino | dinov2 | timm. layout: 'train' (the training file: I-JEPA
    encoder/predictor/target_encoder with ``module.``; MAE model with decoder and args;
    DINO student/teacher with heads and args; DINOv2 teacher with dino/ibot heads),
    'released' (backbone only: a flat state dict, or MAE's {'model': encoder}) or
    'finetuned' (MAE only: fc_norm and a classification head). ``num_reg_tokens`` and
    ``chunk_size`` apply to DINOv2; timm files are always a flat timm state dict with a
    head. ``num_heads`` is only checked against the width: it is not stored.
    """
    if family not in FAMILIES or layout not in LAYOUTS or (layout == "finetuned" and family != "mae"):
        raise ValueError(f"unsupported family/layout {family}/{layout}")
    if embed_dim % num_heads:
        raise ValueError(f"num_heads={num_heads} does not divide embed_dim={embed_dim}")
    gen = torch.Generator().manual_seed(seed)
    dims = {"embed_dim": embed_dim, "depth": depth, "patch_size": patch_size, "img_size": img_size}
    builders = {
        "ijepa": lambda: _ijepa(dims, gen, layout),
        "mae": lambda: _mae(dims, gen, layout),
        "dino": lambda: _dino(dims, gen, layout),
        "dinov2": lambda: _dinov2(dims, gen, layout, num_reg_tokens, chunk_size),
        "timm": lambda: _timm(dims, gen),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(builders[family](), path)
    return path


def save_safetensors(top: dict, path: str | Path) -> Path:
    """``top`` (a checkpoint as :func:`make_checkpoint` builds it) as a safetensors file: the tensors
    of a flat state dict, or ``<entry>.<key>`` for those of each entry (what an export of the
    training file holds; non-tensor parts such as the optimiser state cannot be stored and are left out)."""
    from safetensors.torch import save_file

    flat: dict[str, Tensor] = {}
    for key, value in top.items():
        if isinstance(value, Tensor):
            flat[key] = value
        elif isinstance(value, dict):
            flat.update({f"{key}.{name}": v for name, v in value.items() if isinstance(v, Tensor)})
    path = Path(path)
    save_file({k: v.contiguous() for k, v in flat.items()}, path)
    return path


def run_tiny_suite(tmp_path: Path, entries: str):
    """Runs a suite of ``entries`` (the YAML lines under ``protocols:``) for one tiny I-JEPA
    (width 64, depth 4, 16 px) on CPU, records in ``tmp_path / 'out'``; returns the outcome."""
    from jepa_eval.backbones.spec import ModelSpec
    from jepa_eval.features.splits import ExtractOptions
    from jepa_eval.pipeline.suite import load_suite, run_suite

    ckpt = make_checkpoint("ijepa", tmp_path / "tiny.pth.tar", embed_dim=64, depth=4, img_size=16)
    suite_file = tmp_path / "tiny-suite.yaml"
    suite_file.write_text("suite: tiny\nprotocols:\n" + entries)
    options = ExtractOptions(device="cpu", cache_dir=str(tmp_path / "c"), progress=False)
    return run_suite(load_suite(suite_file), [ModelSpec(ckpt=str(ckpt), name="tiny")], options, tmp_path / "out")
