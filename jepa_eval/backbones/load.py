"""Checkpoint files -> a timm ViT backbone, loaded strictly, read without running code.

``load_backbone`` takes a file (an I-JEPA, MAE, DINO or DINOv2 training file, a released
backbone-only state dict or a timm state dict, as ``.pth`` or ``.safetensors``), a Hugging Face
file ``hf:ORG/NAME[/FILE][@REVISION]`` (or ``hf-hub:``; :mod:`jepa_eval.backbones.hub`) or
``timm:MODEL_NAME`` (random weights; with a pretrained tag, ``timm:ARCH.TAG``, that tag's weights). The family adapters
(:mod:`jepa_eval.backbones.files`, one module per family under ``families/``) recognise each
layout by its keys and convert it to one canonical timm state dict: prefixes such as ``module.`` and ``backbone.``
are stripped only at the start of keys, heads, decoders and predictors are set aside by name,
and the architecture (width, depth, patch, grid, CLS and register tokens, layer scale, MLP
ratio) is read from tensor shapes. Every backbone weight must load (``strict``), or the load
is refused with the missing and unexpected keys listed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from jepa_eval.backbones import families
from jepa_eval.backbones.backbone import Backbone
from jepa_eval.backbones.files import (FamilyAdapter, StateDict, detect_family, is_state_dict, listed_keys,
                                       read_checkpoint, strip_prefixes)
from jepa_eval.backbones.hub import WEIGHT_FILES, HubFile, hub_file, is_hub_spec, parse_hub_spec, timm_pretrained_file
from jepa_eval.backbones.vit import STANDARD_HEADS, VIT_SIZES, build_vit, vit_arch
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.hashing import file_sha256


def _select_entry(top: Mapping[str, Any], entries: tuple[str, ...], ckpt_key: str | None,
                  source: str) -> tuple[Mapping[str, Tensor], str | None]:
    """The state dict to load and its top-level key (None for a flat file)."""
    available = [k for k, v in top.items() if is_state_dict(v)]
    if ckpt_key is not None:
        if ckpt_key not in available:
            raise JepaEvalError(
                f"{source} has no state dict under the key '{ckpt_key}'",
                expected=f"one of {available}" if available else "no key: the file is a flat state dict",
                found=f"top-level keys {listed_keys([str(k) for k in top])}",
                hint="Leave ckpt_key unset to use the family's default entry")
        return top[ckpt_key], ckpt_key
    if is_state_dict(top):
        return top, None
    for entry in entries:
        if entry in available:
            return top[entry], entry
    raise JepaEvalError(f"{source} holds no state dict where expected",
                        expected=f"a state dict under one of {list(entries)}" if entries
                        else "a flat state dict (a dict of tensors)",
                        found=f"state dicts under {available}", hint="Pick one with ckpt_key")


def _split_keys(state: Mapping[str, Tensor], adapter: FamilyAdapter) -> tuple[StateDict, list[str]]:
    """(stripped backbone state dict, original names of the ignored keys)."""
    kept: StateDict = {}
    ignored: list[str] = []
    for key, value in state.items():
        name = strip_prefixes(key, adapter.strip)
        if name.startswith(adapter.ignore):
            ignored.append(key)
        else:
            kept[name] = value
    return adapter.convert(kept), ignored


def _square_side(n: int) -> int | None:
    side = math.isqrt(n) if n > 0 else 0
    return side if side > 0 and side * side == n else None


def _resolve_heads(embed_dim: int, num_heads: int | None) -> int:
    if num_heads is not None:
        if num_heads <= 0 or embed_dim % num_heads:
            raise JepaEvalError("num_heads must divide the width of the checkpoint",
                                expected=f"a divisor of {embed_dim}", found=f"num_heads={num_heads}")
        return num_heads
    if embed_dim in STANDARD_HEADS:
        return STANDARD_HEADS[embed_dim]
    if embed_dim % 64 == 0:
        return embed_dim // 64
    raise JepaEvalError("cannot tell the number of attention heads from the weights",
                        expected=f"a standard width {sorted(STANDARD_HEADS)} or a multiple of 64",
                        found=f"width {embed_dim}", hint="Pass num_heads (--num-heads)")


def infer_arch(state: Mapping[str, Tensor], *, num_heads: int | None = None) -> dict[str, Any]:
    """:func:`build_vit` arguments read from a canonical (timm-named) state dict's shapes."""
    proj = state.get("patch_embed.proj.weight")
    pos = state.get("pos_embed")
    if proj is None or proj.ndim != 4 or pos is None or pos.ndim != 3:
        raise JepaEvalError("the state dict is not a ViT with a patch embedding and a position embedding",
                            expected="keys patch_embed.proj.weight [D, 3, p, p] and pos_embed [1, N, D]",
                            found=f"keys {listed_keys(list(state))}")
    embed_dim, patch = proj.shape[0], proj.shape[2]
    blocks = {int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if not blocks or fc1 is None:
        raise JepaEvalError("the state dict has no transformer blocks",
                            expected="keys blocks.{i}.attn.qkv.weight, blocks.{i}.mlp.fc1.weight...",
                            found=f"keys {listed_keys(list(state))}")
    class_token = "cls_token" in state
    num_reg = state["reg_token"].shape[1] if "reg_token" in state else 0
    prefix = int(class_token) + num_reg
    no_embed_class = prefix > 0 and _square_side(pos.shape[1]) is not None
    grid = _square_side(pos.shape[1] - (0 if no_embed_class else prefix))
    if grid is None:
        raise JepaEvalError("the position embedding does not cover a square patch grid",
                            expected=f"pos_embed [1, {prefix} + n*n, D]",
                            found=f"pos_embed {list(pos.shape)}")
    fc_norm = "fc_norm.weight" in state
    return {
        "embed_dim": embed_dim, "depth": max(blocks) + 1,
        "num_heads": _resolve_heads(embed_dim, num_heads), "patch_size": patch,
        "img_size": grid * patch, "class_token": class_token,
        "mlp_ratio": fc1.shape[0] / embed_dim, "num_reg_tokens": num_reg,
        "init_values": 1.0 if "blocks.0.ls1.gamma" in state else None,
        "no_embed_class": no_embed_class, "fc_norm": fc_norm,
        "global_pool": "avg" if fc_norm or not class_token else "token",
    }


def _resample_pos_embed(state: StateDict, model: VisionTransformer, notes: list[str]) -> None:
    """Resample ``state['pos_embed']`` in place to the model's grid (bicubic), noting it."""
    if model.pos_embed is None or "pos_embed" not in state:
        return  # nothing to resample; a missing pos_embed is reported by the strict load
    old = state["pos_embed"]
    if old.shape == model.pos_embed.shape:
        return
    prefix = 0 if model.no_embed_class else model.num_prefix_tokens
    old_grid = _square_side(old.shape[1] - prefix)
    if old_grid is None:
        raise JepaEvalError("the checkpoint's position embedding does not cover a square grid",
                            found=f"pos_embed {list(old.shape)} with {prefix} prefix tokens")
    new_grid = model.patch_embed.grid_size
    state["pos_embed"] = resample_abs_pos_embed(old, new_size=list(new_grid), old_size=[old_grid] * 2,
                                                num_prefix_tokens=prefix)
    notes.append(f"position embedding resampled (bicubic) from a {old_grid}x{old_grid} grid "
                 f"to {new_grid[0]}x{new_grid[1]}")


def _load_strict(model: VisionTransformer, state: StateDict, source: str) -> None:
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise JepaEvalError(f"the weights of {source} do not fit the detected architecture",
                            expected="tensor shapes consistent across blocks",
                            found=str(exc).replace("\n", " ")) from exc
    if result.missing_keys or result.unexpected_keys:
        raise JepaEvalError(
            f"refusing a partial load of {source}",
            expected="every backbone weight present and no unknown weight",
            found=f"missing keys {listed_keys(result.missing_keys)}; "
                  f"unexpected keys {listed_keys(result.unexpected_keys)}",
            hint="Check the file is a ViT of a supported family, or pick another ckpt_key")


def _check_image_size(image_size: int, patch_size: int) -> None:
    if image_size <= 0 or image_size % patch_size:
        raise JepaEvalError("the image size must be a positive multiple of the patch size",
                            expected=f"a multiple of {patch_size}", found=f"image_size={image_size}")


def _finish(model: VisionTransformer, **fields: Any) -> Backbone:
    model.eval().float()
    arch = vit_arch(model)
    mode = fields.pop("default_mode")
    if not arch["class_token"] or arch["fc_norm"]:
        mode = "avgpool"
    return Backbone(model=model, arch=arch, default_mode=mode, **fields)


def _heads_from_config(top: Mapping[str, Any]) -> int | None:
    """The encoder's head count recorded by the bundled trainer (``config.run.num_heads``, else
    the named size's), which shapes cannot tell; None for files without a config."""
    config = top.get("config")
    if not isinstance(config, Mapping):
        return None
    run, meta = config.get("run") or {}, config.get("meta") or {}
    if run.get("num_heads"):
        return int(run["num_heads"])
    size = VIT_SIZES.get(str(meta.get("model_name")))
    if size is None or (run.get("embed_dim") and run["embed_dim"] != size.width):
        return None
    return size.heads


def _load_file(path: Path, *, ckpt_key: str | None, num_heads: int | None,
               image_size: int | None, trust_checkpoint: bool) -> Backbone:
    top = read_checkpoint(path, trust_checkpoint=trust_checkpoint)
    adapter = detect_family(top, str(path))
    state, key = _select_entry(top, adapter.entries, ckpt_key, str(path))
    canonical, ignored = _split_keys(state, adapter)
    arch = infer_arch(canonical, num_heads=num_heads if num_heads is not None else _heads_from_config(top))
    if image_size is not None:
        _check_image_size(image_size, arch["patch_size"])
        arch["img_size"] = image_size
    model = build_vit(**arch)
    notes: list[str] = []
    _resample_pos_embed(canonical, model, notes)
    _load_strict(model, canonical, str(path))
    return _finish(model, family=adapter.name, source=str(path), ckpt_key=key,
                   sha256=file_sha256(path), default_mode=adapter.default_mode,
                   ignored_keys=ignored, notes=notes)


IJEPA_PORT_NOTE = ("timm's I-JEPA port holds the context encoder ('encoder' of the official file), not the target "
                   "encoder the paper evaluates; give the official file (--weights IN1K-vit.h.14-300e.pth.tar) to "
                   "load its target encoder")


def _timm_weights_note(name: str, pretrained: HubFile | None, key: str | None) -> list[str]:
    """What to say of an I-JEPA tag's weights: which encoder was loaded, against timm's own choice."""
    if "ijepa" not in name:
        return []
    if key == "target_encoder":
        return ["loaded the official file's target encoder ('target_encoder', as the I-JEPA paper evaluates); "
                "timm's own loader (pretrained=True) takes its context encoder ('encoder')"]
    return [IJEPA_PORT_NOTE] if key in (None, "encoder") else []


def _normalisation_note(name: str) -> list[str]:
    """A note when timm's pretrained config normalises otherwise than the ImageNet mean/std used here."""
    from timm.models import get_pretrained_cfg

    from jepa_eval.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    cfg = get_pretrained_cfg(name) if "." in name else None
    if cfg is None or (tuple(cfg.mean), tuple(cfg.std)) == (IMAGENET_MEAN, IMAGENET_STD):
        return []
    return [f"timm's pretrained config normalises with mean {tuple(cfg.mean)} and std {tuple(cfg.std)}; "
            "jepa-eval normalises every model with the ImageNet mean and std"]


def _load_timm(name: str, *, weights: str | None, ckpt_key: str | None,
               image_size: int | None, trust_checkpoint: bool, seed: int, download: bool) -> Backbone:
    import timm

    pretrained = None if weights is not None else timm_pretrained_file(name, download=download)
    size = {} if image_size is None else {"img_size": image_size}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(name, pretrained=False, num_classes=0, **size)
    except (RuntimeError, TypeError) as exc:
        raise JepaEvalError(f"timm cannot build the model '{name}'", expected="a model name timm knows",
                            found=str(exc),
                            hint="List names with timm.list_models('vit_*')") from exc
    if not isinstance(model, VisionTransformer):
        raise JepaEvalError(f"timm:{name} is not a timm VisionTransformer",
                            expected="a timm VisionTransformer model name (vit_*, deit_*...)",
                            found=f"a {type(model).__name__}")
    if image_size is not None:
        _check_image_size(image_size, model.patch_embed.patch_size[0])
    fields: dict[str, Any] = {"family": "timm", "source": f"timm:{name}", "ckpt_key": None,
                              "sha256": f"random:{name}:seed{seed}", "default_mode": "cls",
                              "notes": [f"random initialisation (seed {seed})"]}
    source = weights if weights is not None else None if pretrained is None else str(pretrained.path)
    if source is not None:
        top = read_checkpoint(source, trust_checkpoint=trust_checkpoint)
        adapter = detect_family(top, source)
        state, key = _select_entry(top, adapter.entries, ckpt_key, source)
        # the model is built without a classifier: what the timm layout sets aside (its head) is never part of it
        timm_ignored = families.adapter("timm").ignore
        canonical, ignored = _split_keys(state, replace(adapter, ignore=(*adapter.ignore, *timm_ignored)))
        where = f"{source} ['{key}']" if key else source
        fields.update(ckpt_key=key, sha256=file_sha256(source), ignored_keys=ignored,
                      notes=[f"weights from {where}", *_timm_weights_note(name, pretrained, key),
                             *_normalisation_note(name)],
                      origin={"file": str(source), **(pretrained.origin() if pretrained is not None else {})})
        _resample_pos_embed(canonical, model, fields["notes"])
        _load_strict(model, canonical, source)
    return _finish(model, **fields)


def _load_hub(spec: str, *, download: bool, **options: Any) -> Backbone:
    """A model file of the Hugging Face cache (:mod:`jepa_eval.backbones.hub`), loaded as a file."""
    repo_id, filename, revision = parse_hub_spec(spec)
    found = hub_file(repo_id, (filename,) if filename else WEIGHT_FILES, revision, download=download)
    backbone = _load_file(found.path, **options)
    backbone.origin = found.origin()
    backbone.notes.append(f"Hugging Face {repo_id} at commit {found.hub_revision}, file {found.hub_file}")
    if "ijepa" in repo_id.lower() and backbone.ckpt_key in (None, "encoder"):
        backbone.notes.append(IJEPA_PORT_NOTE)
    return backbone


def load_backbone(spec: str, *, ckpt_key: str | None = None, num_heads: int | None = None,
                  weights: str | None = None, image_size: int | None = None,
                  trust_checkpoint: bool = False, seed: int = 0, download: bool = False) -> Backbone:
    """Load ``spec`` (a checkpoint file, ``hf:ORG/NAME[/FILE][@REVISION]``, ``hf-hub:ORG/NAME`` or
    ``timm:MODEL_NAME[.TAG]``) as an eval-mode timm ViT.

    ``ckpt_key`` picks the top-level entry (default: the family's, e.g. ``target_encoder``
    for I-JEPA, ``teacher`` for DINO); ``num_heads`` overrides the head count read from the
    width; ``image_size`` (pixels) resamples the position embedding when it differs from the
    checkpoint's grid; ``weights`` is a state dict file for a ``timm:`` model, which is
    otherwise randomly initialised with ``seed`` unless its name carries a pretrained tag. Hub
    files and tags come from the local caches; ``download`` allows the network when they are not
    there. See :func:`read_checkpoint` for ``trust_checkpoint``.
    """
    if spec.startswith("timm:"):
        if num_heads is not None:
            raise JepaEvalError("num_heads applies to checkpoint files only",
                                expected="no num_heads with timm:MODEL_NAME",
                                found=f"num_heads={num_heads}", hint="The timm model name fixes the heads")
        return _load_timm(spec.removeprefix("timm:"), weights=weights, ckpt_key=ckpt_key,
                          image_size=image_size, trust_checkpoint=trust_checkpoint, seed=seed, download=download)
    if weights is not None:
        raise JepaEvalError("weights applies to timm:MODEL_NAME only",
                            expected="a timm:MODEL_NAME spec with weights", found=f"spec {spec}",
                            hint="Pass the checkpoint file itself as the spec")
    options: dict[str, Any] = {"ckpt_key": ckpt_key, "num_heads": num_heads, "image_size": image_size,
                               "trust_checkpoint": trust_checkpoint}
    if is_hub_spec(spec):
        return _load_hub(spec, download=download, **options)
    return _load_file(Path(spec), **options)
