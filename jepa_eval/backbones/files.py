"""Reading checkpoint files without running code, and the registry of checkpoint families.

``read_checkpoint`` loads a file with ``weights_only=True``, or a ``.safetensors`` file (tensors
only, never pickle; keys ``<entry>.<name>`` of an exported training file, such as
``target_encoder.module.blocks.0...`` or ``teacher.backbone.blocks.0...``, are regrouped under their
entry, so every family's layout reads as from its ``.pth`` file). Each family module under
:mod:`jepa_eval.backbones.families` registers a :class:`FamilyAdapter` (``@register_family``)
that recognises its layout by the keys and says how to turn it into a canonical timm state dict:
prefixes stripped only at the start of keys, heads/decoders/predictors set aside by name, and a
``convert`` for what is left. Families are tried in registration order.
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jepa_eval.core.errors import JepaEvalError

StateDict = dict[str, Tensor]


Recogniser = Callable[[Mapping[str, Any]], bool]


_MAX_LISTED_KEYS = 12


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


def is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())


def strip_prefixes(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        key = key.removeprefix(prefix)
    return key


def state_names(top: Mapping[str, Any], entry: str | None = None,
           prefixes: tuple[str, ...] = ("module.",)) -> StateDict:
    """``top[entry]`` (or ``top`` itself, if flat) with ``prefixes`` stripped; {} if no state dict."""
    state = top if entry is None else top.get(entry)
    if not is_state_dict(state):
        return {}
    return {strip_prefixes(k, prefixes): v for k, v in state.items()}


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


SAFETENSORS_SUFFIX = ".safetensors"


def _read_safetensors(path: Path) -> dict[str, Any]:
    """The tensors of a safetensors file; keys ``<entry>.<rest>`` of a family's entry (e.g.
    ``target_encoder``, ``teacher``, ``model``) regrouped as ``{entry: {rest: tensor}}``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        flat = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise JepaEvalError(f"cannot read {path} as a safetensors file",
                            expected="a file written by safetensors (a JSON header, then tensors)",
                            found=f"{type(exc).__name__}: {exc}") from exc
    entries = {entry for adapter in FAMILIES.values() for entry in adapter.entries}
    if not any(key.split(".", 1)[0] in entries for key in flat):
        return flat
    top: dict[str, Any] = {}
    for key, tensor in flat.items():
        head, _, rest = key.partition(".")
        if rest:
            top.setdefault(head, {})[rest] = tensor
        else:
            top[key] = tensor
    return top


def read_checkpoint(path: str | Path, *, trust_checkpoint: bool = False) -> Mapping[str, Any]:
    """The top-level object of a checkpoint file, loaded with ``weights_only=True``, or the
    tensors of a ``.safetensors`` file (:func:`_read_safetensors`).

    Only tensors, plain containers and ``argparse.Namespace`` (the ``args`` of DINO and MAE
    training files) are unpickled. A file needing other Python objects is refused unless
    ``trust_checkpoint``, which loads it with ``weights_only=False`` after a warning.
    """
    path = Path(path)
    if not path.is_file():
        raise JepaEvalError(f"checkpoint {path} is not a file",
                            expected="a path to a .pth/.pt/.pth.tar/.safetensors file, hf:ORG/NAME or "
                                     "timm:MODEL_NAME",
                            found="a directory" if path.is_dir() else "no such file")
    if path.stat().st_size == 0:
        raise JepaEvalError(f"checkpoint file {path} is empty", expected="a file written by torch.save",
                            found="0 bytes")
    if path.name.endswith(SAFETENSORS_SUFFIX):
        return _read_safetensors(path)
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


def listed_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return f"[{shown}{f', ... {more} more' if more > 0 else ''}]"


TRANSFORMERS_MARKERS = ("embeddings.patch_embeddings.projection.weight", "encoder.layer.0.")


def detect_family(top: Mapping[str, Any], source: str = "checkpoint") -> FamilyAdapter:
    """The first registered family that recognises ``top``; an error listing its keys if none."""
    for adapter in FAMILIES.values():
        if adapter.recognise(top):
            return adapter
    names: list[str] = []
    for key, value in top.items():
        names += [f"{key}.{name}" for name in value] if isinstance(value, Mapping) else [str(key)]
    transformers = any(name.startswith(TRANSFORMERS_MARKERS) for name in names)
    raise JepaEvalError(f"{source} has a layout no checkpoint family recognises",
                        expected=f"one of the layouts of {list_families()}: top-level keys such as "
                                 "'target_encoder', 'teacher' or 'model' (in a .safetensors file, key prefixes "
                                 "such as 'target_encoder.'), or a flat ViT state dict",
                        found=f"top-level keys {listed_keys([str(k) for k in top])}",
                        hint="This is a Hugging Face transformers export, whose names jepa-eval does not map: "
                             "use timm's port (hf-hub:timm/...) or the original checkpoint file" if transformers
                        else "Save the backbone's state dict alone (a flat dict of tensors)")
