"""Checkpoint files -> a timm ViT backbone, loaded strictly, read without running code.

``load_backbone`` takes a file (an I-JEPA, MAE, DINO or DINOv2 training file, a released
backbone-only state dict or a timm state dict) or ``timm:MODEL_NAME``. A registry of family
adapters (``@register_family``, ``list_families()``) recognises each layout by its keys and
converts it to one canonical timm state dict: prefixes such as ``module.`` and ``backbone.``
are stripped only at the start of keys, heads, decoders and predictors are set aside by name,
and the architecture (width, depth, patch, grid, CLS and register tokens, layer scale, MLP
ratio) is read from tensor shapes. Every backbone weight must load (``strict``), or the load
is refused with the missing and unexpected keys listed.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.backbones.vit import VIT_SIZES, build_vit, vit_arch

StateDict = dict[str, Tensor]
Recogniser = Callable[[Mapping[str, Any]], bool]
# Heads of the official sizes (tiny ... giant); other widths use width // 64.
STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}
_MAX_LISTED_KEYS = 12


@dataclass
class Backbone:
    """A loaded backbone: a timm ViT in eval mode (float32) and where it came from.

    ``arch`` holds :func:`jepa_eval.backbones.vit.build_vit` keyword arguments, so ``build_vit(**arch)``
    rebuilds the same architecture. ``notes`` records changes made while loading (such as a
    resampled position embedding).
    """

    model: VisionTransformer
    family: str
    source: str
    ckpt_key: str | None
    sha256: str
    arch: dict[str, Any]
    default_mode: str
    ignored_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def image_size(self) -> int:
        return int(self.arch["img_size"])

    @property
    def has_cls(self) -> bool:
        return bool(self.arch["class_token"])

    def describe(self) -> str:
        """One line: the detected family, the entry used and the architecture found."""
        a = self.arch
        grid = a["img_size"] // a["patch_size"]
        where = f"{self.source}" + (f" ['{self.ckpt_key}']" if self.ckpt_key else "")
        tokens = "CLS token" if a["class_token"] else "no CLS token"
        if a["num_reg_tokens"]:
            tokens += f", {a['num_reg_tokens']} register tokens"
        extras = [f"MLP ratio {a['mlp_ratio']:g}"]
        if a["init_values"] is not None:
            extras.append("layer scale")
        if a["fc_norm"]:
            extras.append("norm after pooling (fc_norm)")
        extras.append(f"{len(self.ignored_keys)} keys ignored")
        text = (f"{FAMILIES[self.family].title} backbone from {where}: ViT width {a['embed_dim']}, "
                f"depth {a['depth']}, {a['num_heads']} heads, patch {a['patch_size']}, "
                f"{a['img_size']} px ({grid}x{grid} grid), {tokens}; {', '.join(extras)}; "
                f"default features '{self.default_mode}'")
        return "; ".join([text, *self.notes])


@dataclass(frozen=True)
class FamilyAdapter:
    """How one family's files look and how to turn them into a canonical timm state dict.

    ``entries`` are the top-level keys holding state dicts, the default first; ``strip`` the
    key prefixes removed (in order, only at the start); ``ignore`` the prefixes, after
    stripping, of keys that are not part of the backbone; ``convert`` renames what is left.
    """

    name: str
    title: str
    recognise: Recogniser
    entries: tuple[str, ...]
    strip: tuple[str, ...]
    ignore: tuple[str, ...]
    default_mode: str
    convert: Callable[[StateDict], StateDict]


FAMILIES: dict[str, FamilyAdapter] = {}


def register_family(name: str, *, title: str, entries: tuple[str, ...] = (),
                    strip: tuple[str, ...] = ("module.",), ignore: tuple[str, ...] = (),
                    default_mode: str = "cls",
                    convert: Callable[[StateDict], StateDict] = dict,
                    ) -> Callable[[Recogniser], Recogniser]:
    """Decorate a recogniser ``(top-level checkpoint) -> bool`` to register a family.

    Families are tried in registration order; the first that recognises a file wins.
    """
    def decorator(recognise: Recogniser) -> Recogniser:
        FAMILIES[name] = FamilyAdapter(name, title, recognise, entries, strip, ignore,
                                       default_mode, convert)
        return recognise
    return decorator


def list_families() -> list[str]:
    """Names of the registered checkpoint families, in detection order."""
    return list(FAMILIES)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        key = key.removeprefix(prefix)
    return key


def _names(top: Mapping[str, Any], entry: str | None = None,
           prefixes: tuple[str, ...] = ("module.",)) -> StateDict:
    """``top[entry]`` (or ``top`` itself, if flat) with ``prefixes`` stripped; {} if no state dict."""
    state = top if entry is None else top.get(entry)
    if not _is_state_dict(state):
        return {}
    return {_strip(k, prefixes): v for k, v in state.items()}


def _dinov2_markers(names: Mapping[str, Tensor]) -> bool:
    mask = names.get("mask_token")
    return ("register_tokens" in names or (mask is not None and mask.ndim == 2)
            or any(k.endswith(".ls1.gamma") or k.startswith(("dino_head.", "ibot_head."))
                   for k in names))


def _dinov2_to_timm(state: StateDict) -> StateDict:
    """Unchunk ``blocks.{chunk}.{i}.*`` to ``blocks.{i}.*``; registers to timm's layout.

    DINOv2 adds no position to its register tokens and one to the CLS token; timm's
    ``no_embed_class`` model adds positions to patches only, so the CLS position is folded
    into the CLS token (the sum the official forward computes) and dropped from pos_embed.
    """
    out = {}
    for key, value in state.items():
        chunked = re.match(r"blocks\.\d+\.(\d+\..*)$", key)
        out[f"blocks.{chunked[1]}" if chunked else key] = value
    if "register_tokens" in out:
        pos = out.pop("pos_embed")
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
    return out


@register_family("ijepa", title="I-JEPA", entries=("target_encoder", "encoder"),
                 default_mode="avgpool")
def _is_ijepa(top: Mapping[str, Any]) -> bool:
    """A training file (encoder, predictor, target_encoder...) or a flat encoder: no CLS."""
    if "target_encoder" in top or ("encoder" in top and "predictor" in top):
        return True
    names = _names(top)
    return ("pos_embed" in names and "cls_token" not in names
            and not any(k.startswith("decoder_") for k in names))


@register_family("dinov2", title="DINOv2", entries=("teacher", "student"),
                 strip=("module.", "backbone."), ignore=("dino_head.", "ibot_head.", "mask_token"),
                 convert=_dinov2_to_timm)
def _is_dinov2(top: Mapping[str, Any]) -> bool:
    """A teacher/student file or a flat backbone with DINOv2 parts (mask token [1, D],
    register tokens, layer scale, DINO/iBOT heads)."""
    prefixes = ("module.", "backbone.")
    return any(_dinov2_markers(_names(top, entry, prefixes)) for entry in ("teacher", "student", None))


@register_family("dino", title="DINO", entries=("teacher", "student"),
                 strip=("module.", "backbone."), ignore=("head.",))
def _is_dino(top: Mapping[str, Any]) -> bool:
    """A training file: teacher and student, backbone under ``backbone.``."""
    return _is_state_dict(top.get("teacher")) or _is_state_dict(top.get("student"))


@register_family("mae", title="MAE", entries=("model",), ignore=("decoder_", "mask_token", "head."))
def _is_mae(top: Mapping[str, Any]) -> bool:
    """A training or fine-tuning file (``model``) or a flat one with a decoder or a
    mask token [1, 1, D]."""
    if _is_state_dict(top.get("model")):
        return True
    names = _names(top)
    mask = names.get("mask_token")
    return any(k.startswith("decoder_") for k in names) or (mask is not None and mask.ndim == 3)


@register_family("timm", title="timm-layout", ignore=("head.",))
def _is_timm(top: Mapping[str, Any]) -> bool:
    """A flat ViT state dict with a CLS token (timm's layout, also DINO's released backbones)."""
    return "cls_token" in _names(top)


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks of ``chunk_bytes``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _not_a_checkpoint(path: Path, exc: BaseException) -> JepaEvalError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
    return JepaEvalError(f"cannot read {path} as a PyTorch checkpoint",
                         expected="a file written by torch.save", found=f"{type(exc).__name__}: {detail}",
                         hint="The file may be truncated, still being written, or not a checkpoint")


def _torch_load(path: Path, *, weights_only: bool) -> Any:
    """``torch.load`` on the CPU; a damaged file becomes a :class:`JepaEvalError`, while the
    weights-only unpickler's refusal of a Python object stays a ``pickle.UnpicklingError``."""
    try:
        if not weights_only:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if weights_only and "Weights only load failed" in str(exc):
            raise
        raise _not_a_checkpoint(path, exc) from exc
    except Exception as exc:  # torch.load raises many types for a damaged file
        raise _not_a_checkpoint(path, exc) from exc


def read_checkpoint(path: str | Path, *, trust_checkpoint: bool = False) -> Mapping[str, Any]:
    """The top-level object of a checkpoint file, loaded with ``weights_only=True``.

    Only tensors, plain containers and ``argparse.Namespace`` (the ``args`` of DINO and MAE
    training files) are unpickled. A file needing other Python objects is refused unless
    ``trust_checkpoint``, which loads it with ``weights_only=False`` after a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise JepaEvalError(f"checkpoint {path} is not a file",
                            expected="a path to a .pth/.pt/.pth.tar file or timm:MODEL_NAME",
                            found="a directory" if path.is_dir() else "no such file")
    if path.stat().st_size == 0:
        raise JepaEvalError(f"checkpoint file {path} is empty", expected="a file written by torch.save",
                            found="0 bytes")
    try:
        top = _torch_load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_checkpoint:
            needed = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(exc))
            raise JepaEvalError(
                f"{path} needs arbitrary Python objects to load, and unpickling them could run code",
                expected="tensors, plain containers and argparse.Namespace only",
                found=f"a pickled {needed[1] if needed else 'object of another type'}",
                hint="If you trust where the file came from, pass --trust-checkpoint "
                     "(trust_checkpoint=True)") from exc
        warnings.warn(f"loading {path} with weights_only=False (trust_checkpoint): unpickling "
                      "can run arbitrary code", stacklevel=2)
        top = _torch_load(path, weights_only=False)
    if not isinstance(top, Mapping):
        raise JepaEvalError(f"{path} does not hold a state dict",
                            expected="a dict of tensors or a dict of such dicts",
                            found=f"a {type(top).__name__}")
    return top


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return f"[{shown}{f', ... {more} more' if more > 0 else ''}]"


def detect_family(top: Mapping[str, Any], source: str = "checkpoint") -> FamilyAdapter:
    """The first registered family that recognises ``top``; an error listing its keys if none."""
    for adapter in FAMILIES.values():
        if adapter.recognise(top):
            return adapter
    raise JepaEvalError(f"{source} has a layout no checkpoint family recognises",
                        expected=f"one of the layouts of {list_families()}: top-level keys such as "
                                 "'target_encoder', 'teacher' or 'model', or a flat ViT state dict",
                        found=f"top-level keys {_listed([str(k) for k in top])}",
                        hint="Save the backbone's state dict alone (a flat dict of tensors)")


def _select_entry(top: Mapping[str, Any], entries: tuple[str, ...], ckpt_key: str | None,
                  source: str) -> tuple[Mapping[str, Tensor], str | None]:
    """The state dict to load and its top-level key (None for a flat file)."""
    available = [k for k, v in top.items() if _is_state_dict(v)]
    if ckpt_key is not None:
        if ckpt_key not in available:
            raise JepaEvalError(
                f"{source} has no state dict under the key '{ckpt_key}'",
                expected=f"one of {available}" if available else "no key: the file is a flat state dict",
                found=f"top-level keys {_listed([str(k) for k in top])}",
                hint="Leave ckpt_key unset to use the family's default entry")
        return top[ckpt_key], ckpt_key
    if _is_state_dict(top):
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
        name = _strip(key, adapter.strip)
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
                            found=f"keys {_listed(list(state))}")
    embed_dim, patch = proj.shape[0], proj.shape[2]
    blocks = {int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if not blocks or fc1 is None:
        raise JepaEvalError("the state dict has no transformer blocks",
                            expected="keys blocks.{i}.attn.qkv.weight, blocks.{i}.mlp.fc1.weight...",
                            found=f"keys {_listed(list(state))}")
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
            found=f"missing keys {_listed(result.missing_keys)}; "
                  f"unexpected keys {_listed(result.unexpected_keys)}",
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
    if size is None or (run.get("embed_dim") and run["embed_dim"] != size[0]):
        return None
    return size[2]


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


def _load_timm(name: str, *, weights: str | None, ckpt_key: str | None,
               image_size: int | None, trust_checkpoint: bool, seed: int) -> Backbone:
    import timm

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
    if weights is not None:
        top = read_checkpoint(weights, trust_checkpoint=trust_checkpoint)
        state, key = _select_entry(top, (), ckpt_key, weights)
        canonical, ignored = _split_keys(state, FAMILIES["timm"])
        fields.update(ckpt_key=key, sha256=file_sha256(weights), ignored_keys=ignored,
                      notes=[f"weights from {weights}"])
        _resample_pos_embed(canonical, model, fields["notes"])
        _load_strict(model, canonical, weights)
    return _finish(model, **fields)


def load_backbone(spec: str, *, ckpt_key: str | None = None, num_heads: int | None = None,
                  weights: str | None = None, image_size: int | None = None,
                  trust_checkpoint: bool = False, seed: int = 0) -> Backbone:
    """Load ``spec`` (a checkpoint file or ``timm:MODEL_NAME``) as an eval-mode timm ViT.

    ``ckpt_key`` picks the top-level entry (default: the family's, e.g. ``target_encoder``
    for I-JEPA, ``teacher`` for DINO); ``num_heads`` overrides the head count read from the
    width; ``image_size`` (pixels) resamples the position embedding when it differs from the
    checkpoint's grid; ``weights`` is a state dict file for a ``timm:`` model, which is
    otherwise randomly initialised with ``seed``. See :func:`read_checkpoint` for
    ``trust_checkpoint``.
    """
    if spec.startswith("timm:"):
        if num_heads is not None:
            raise JepaEvalError("num_heads applies to checkpoint files only",
                                expected="no num_heads with timm:MODEL_NAME",
                                found=f"num_heads={num_heads}", hint="The timm model name fixes the heads")
        return _load_timm(spec.removeprefix("timm:"), weights=weights, ckpt_key=ckpt_key,
                          image_size=image_size, trust_checkpoint=trust_checkpoint, seed=seed)
    if weights is not None:
        raise JepaEvalError("weights applies to timm:MODEL_NAME only",
                            expected="a timm:MODEL_NAME spec with weights", found=f"spec {spec}",
                            hint="Pass the checkpoint file itself as the spec")
    return _load_file(Path(spec), ckpt_key=ckpt_key, num_heads=num_heads, image_size=image_size,
                      trust_checkpoint=trust_checkpoint)
