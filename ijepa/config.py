"""The trainer's config: the official I-JEPA YAML schema, unchanged, plus our ``run`` section.

A YAML file has up to six sections (data, logging, mask, meta, optimization, run); every key
is optional and defaults to the official ViT-H/14 ImageNet value (configs/in1k_vith14_ep300.yaml)
except the paths, so an official config file loads as it is. Validation is strict: an unknown
key (with the closest valid one suggested), a wrong type or an impossible value raises
:class:`ConfigError` naming the key path, such as ``mask.pred_mask_scale[1]``.
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from ijepa.masks import context_floor
from jepa_eval.backbones.vit import VIT_SIZES
from jepa_eval.core.atomic import atomic_write_text
from jepa_eval.protocols.knn import REFERENCE_K
from jepa_eval.core.errors import JepaEvalError

MODEL_SIZES = VIT_SIZES
"""Official encoder sizes: name -> (width, depth, heads, MLP ratio), the evaluator's table."""


class ConfigError(JepaEvalError):
    """A config value that cannot be used; ``key`` is its path (``mask.pred_mask_scale[1]``),
    ``source`` the file it came from, when known."""

    def __init__(self, key: str | None, problem: str, *, expected: str | None = None,
                 found: str | None = None, hint: str | None = None,
                 source: str | None = None) -> None:
        self.key, self.detail, self.source = key, problem, source
        where = f" in {source}" if source else ""
        head = f"config key {key}{where} {problem}" if key else f"config{where}: {problem}"
        super().__init__(head, expected=expected, found=found, hint=hint)

    def located(self, source: str) -> ConfigError:
        """The same error, saying which file it came from."""
        return ConfigError(self.key, self.detail, expected=self.expected, found=self.found,
                           hint=self.hint, source=source)


def _num(default: Any, *, lo: float | None = None, hi: float | None = None,
         open_lo: bool = False, ordered: bool = False) -> Any:
    """A field with bounds: every number in [lo, hi] ((lo, hi] if ``open_lo``); ``ordered``
    pairs need ``[0] <= [1]``."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "open_lo": open_lo,
                                            "ordered": ordered})


@dataclass
class DataConfig:
    """``data``: images and their augmentation.

    Attributes:
        batch_size: images per step (per GPU in the official multi-GPU code), >= 1.
        color_jitter_strength: colour jitter strength s (brightness/contrast/saturation 0.8s,
            hue 0.2s) when ``use_color_distortion``; >= 0.
        crop_scale: [min, max] area fraction of RandomResizedCrop, in (0, 1].
        crop_size: side in pixels of the square training crop; a multiple of
            ``mask.patch_size``.
        image_folder: folder under ``root_path`` holding the images (ImageFolder layout),
            used when ``run.dataset`` is null.
        num_workers: DataLoader worker processes (0 = load in the main process).
        pin_mem: page-locked host memory for faster copies to the GPU.
        root_path: folder holding ``image_folder``.
        use_color_distortion: random colour jitter and greyscale.
        use_gaussian_blur: random Gaussian blur.
        use_horizontal_flip: random horizontal flip.
    """

    batch_size: int = _num(128, lo=1)
    color_jitter_strength: float = _num(0.0, lo=0.0)
    crop_scale: tuple[float, float] = _num((0.3, 1.0), lo=0.0, hi=1.0, open_lo=True,
                                           ordered=True)
    crop_size: int = _num(224, lo=1)
    image_folder: str = ""
    num_workers: int = _num(10, lo=0)
    pin_mem: bool = True
    root_path: str = "."
    use_color_distortion: bool = False
    use_gaussian_blur: bool = False
    use_horizontal_flip: bool = False


@dataclass
class LoggingConfig:
    """``logging``: where the run writes.

    Attributes:
        folder: output folder: ``{write_tag}-latest.pth.tar`` every epoch,
            ``{write_tag}-ep{N}.pth.tar`` every ``run.checkpoint_freq`` epochs, the CSV log
            and the resolved config.
        write_tag: file name prefix of checkpoints and logs.
    """

    folder: str = "logs"
    write_tag: str = "jepa"


@dataclass
class MaskConfig:
    """``mask``: the multi-block mask sampler (see :mod:`ijepa.masks`).

    Attributes:
        allow_overlap: keep target patches inside the context (the official default false
            removes them).
        aspect_ratio: [min, max] height/width ratio of target blocks, > 0.
        enc_mask_scale: [min, max] fraction of the patch grid covered by the context block,
            in (0, 1].
        min_keep: a context must keep more than this many patches; below the patches of the
            smallest context block.
        num_enc_masks: context blocks per image, >= 1.
        num_pred_masks: target blocks per image, >= 1.
        patch_size: patch side in pixels (the encoder's patch size).
        pred_mask_scale: [min, max] fraction of the patch grid covered by each target block,
            in (0, 1].
        official_quirks: (ours) reproduce the official sampler's three flaws exactly instead of
            the fixed sampler (default false).
    """

    allow_overlap: bool = False
    aspect_ratio: tuple[float, float] = _num((0.75, 1.5), lo=0.0, open_lo=True, ordered=True)
    enc_mask_scale: tuple[float, float] = _num((0.85, 1.0), lo=0.0, hi=1.0, open_lo=True,
                                               ordered=True)
    min_keep: int = _num(10, lo=0)
    num_enc_masks: int = _num(1, lo=1)
    num_pred_masks: int = _num(4, lo=1)
    patch_size: int = _num(14, lo=1)
    pred_mask_scale: tuple[float, float] = _num((0.15, 0.2), lo=0.0, hi=1.0, open_lo=True,
                                                ordered=True)
    official_quirks: bool = False


@dataclass
class MetaConfig:
    """``meta``: model and checkpoint.

    Attributes:
        copy_data: official: copy the dataset to local disk first (a cluster convenience);
            kept for schema compatibility, this trainer reads the data where it is.
        load_checkpoint: resume from ``read_checkpoint``, or from
            ``{logging.folder}/{write_tag}-latest.pth.tar`` when that is null.
        model_name: encoder size, one of :data:`MODEL_SIZES` (vit_tiny ... vit_giant).
        pred_depth: predictor transformer blocks, >= 1.
        pred_emb_dim: predictor width; divisible by the predictor's heads.
        read_checkpoint: checkpoint file to resume from, relative to ``logging.folder``
            (an absolute path is used as is); null = the latest one.
        use_bfloat16: bf16 autocast on CUDA (ignored on CPU).
    """

    copy_data: bool = False
    load_checkpoint: bool = False
    model_name: str = "vit_huge"
    pred_depth: int = _num(12, lo=1)
    pred_emb_dim: int = _num(384, lo=1)
    read_checkpoint: str | None = None
    use_bfloat16: bool = True


@dataclass
class OptimizationConfig:
    """``optimization``: AdamW with per-iteration schedules.

    Attributes:
        ema: [start, end] target-encoder EMA momentum, linear over the run; each in [0, 1].
        epochs: training epochs, >= 1.
        final_lr: learning rate at the end of the cosine decay.
        final_weight_decay: weight decay at the end (cosine from ``weight_decay``).
        ipe_scale: stretches every schedule by this factor (> 0; 1 = ends with training).
        lr: peak learning rate, reached after warmup.
        start_lr: learning rate at step 0 (linear warmup to ``lr``).
        warmup: warmup length in epochs, 0 ... ``epochs``.
        weight_decay: weight decay at the start (not applied to biases and 1-D parameters).
    """

    ema: tuple[float, float] = _num((0.996, 1.0), lo=0.0, hi=1.0)
    epochs: int = _num(300, lo=1)
    final_lr: float = _num(1.0e-6, lo=0.0)
    final_weight_decay: float = _num(0.4, lo=0.0)
    ipe_scale: float = _num(1.0, lo=0.0, open_lo=True)
    lr: float = _num(0.001, lo=0.0)
    start_lr: float = _num(0.0002, lo=0.0)
    warmup: int = _num(40, lo=0)
    weight_decay: float = _num(0.04, lo=0.0)


@dataclass
class RunConfig:
    """``run`` (ours): how and where this trainer runs, and small-scale overrides.

    Attributes:
        dataset: a dataset registry name (``cifar10``, ``digits``, ``imagefolder:PATH``...);
            null = an ImageFolder at ``data.root_path/data.image_folder/train``, or that
            folder itself.
        data_root: root folder given to the dataset registry (null = its default).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        seed: seed of model init, data order and masks, >= 0.
        checkpoint_freq: epochs between ``-ep{N}`` checkpoint files (official 50), >= 1.
        monitor_every: steps between RankMe measurements on held-out images (0 = off).
        monitor_samples: held-out images used by the monitor, >= 1.
        monitor_knn: training images in the monitor's k-NN memory bank (0 = no k-NN); the
            held-out images are the queries. Held in memory: 12 KiB an image at 32 px,
            588 KiB at 224 px.
        monitor_knn_k: neighbours of the monitor's k-NN (DINO's 20), at most ``monitor_knn``.
        loss: ``smooth_l1`` (official code) or ``l2`` (the paper's formula).
        target: ``latent`` (target-encoder features) or ``pixels`` (per-patch normalised
            pixels of the target blocks: the paper's ablation).
        init: ``official`` (the official ``init_model``: trunc-normal(0.02) in every block,
            the same numbers as the official build from the same seed) or ``rescaled`` (the
            official model classes' own init, kept as an option: block l's attn.proj and
            mlp.fc2 divided by sqrt(2·l)).
        compile: wrap the models in ``torch.compile``.
        embed_dim: encoder width overriding ``meta.model_name``'s (null = the named one).
        depth: encoder depth overriding the named one.
        num_heads: encoder heads overriding the named one; must divide the width.
        pred_num_heads: predictor heads (null = the encoder's).
        max_iters_per_epoch: cap on steps per epoch for quick runs (null = the whole data).
        log_every: steps between log lines, >= 1.
    """

    dataset: str | None = None
    data_root: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = _num(0, lo=0)
    checkpoint_freq: int = _num(50, lo=1)
    monitor_every: int = _num(0, lo=0)
    monitor_samples: int = _num(512, lo=1)
    monitor_knn: int = _num(0, lo=0)
    monitor_knn_k: int = _num(REFERENCE_K, lo=1)
    loss: Literal["smooth_l1", "l2"] = "smooth_l1"
    target: Literal["latent", "pixels"] = "latent"
    init: Literal["official", "rescaled"] = "official"
    compile: bool = False
    embed_dim: int | None = _num(None, lo=1)
    depth: int | None = _num(None, lo=1)
    num_heads: int | None = _num(None, lo=1)
    pred_num_heads: int | None = _num(None, lo=1)
    max_iters_per_epoch: int | None = _num(None, lo=1)
    log_every: int = _num(10, lo=1)


@dataclass
class TrainConfig:
    """A whole validated training config, one attribute per YAML section."""

    data: DataConfig = field(default_factory=DataConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def load_path(self) -> Path | None:
        """Checkpoint to resume from: None unless ``meta.load_checkpoint`` (official rule)."""
        if not self.meta.load_checkpoint:
            return None
        name = self.meta.read_checkpoint or f"{self.logging.write_tag}-latest.pth.tar"
        return Path(self.logging.folder) / name

    def to_dict(self) -> dict[str, Any]:
        """Every value, defaults filled in, as plain YAML-dumpable types (pairs as lists)."""
        return {section: {key: list(value) if isinstance(value, tuple) else value
                          for key, value in values.items()}
                for section, values in asdict(self).items()}


def encoder_dims(cfg: TrainConfig) -> tuple[int, int, int, float]:
    """(embed_dim, depth, num_heads, mlp_ratio): ``meta.model_name`` with ``run`` overrides."""
    dim, depth, heads, mlp_ratio = MODEL_SIZES[cfg.meta.model_name]
    run = cfg.run
    return (run.embed_dim or dim, run.depth or depth, run.num_heads or heads, mlp_ratio)


def predictor_dims(cfg: TrainConfig) -> tuple[int, int, int]:
    """(pred_emb_dim, pred_depth, pred_num_heads); heads default to the encoder's."""
    heads = cfg.run.pred_num_heads or encoder_dims(cfg)[2]
    return cfg.meta.pred_emb_dim, cfg.meta.pred_depth, heads


SHIPPED_CONFIGS = "ijepa.configs"
"""The package holding the shipped configs (the repository's ``configs/`` folder)."""


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the package, e.g. ``digits_demo``."""
    folder = importlib.resources.files(SHIPPED_CONFIGS)
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def resolve_config(name: str | Path) -> Path:
    """``name`` itself when it is a file, else the shipped config of that name (``digits_demo``
    or ``digits_demo.yaml``, also as ``configs/digits_demo.yaml``), else ``name`` unchanged
    (so that :func:`load_config` reports it missing)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = importlib.resources.files(SHIPPED_CONFIGS) / (path.name if path.suffix else f"{path.name}.yaml")
    inside_configs = len(path.parts) == 1 or (len(path.parts) == 2 and path.parts[0] == "configs")
    return Path(str(shipped)) if inside_configs and shipped.is_file() else path


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``data`` with each ``section.key=value`` of ``overrides`` set (the value read as YAML)."""
    merged = {section: dict(values) if isinstance(values, dict) else values for section, values in data.items()}
    for override in overrides:
        key, sep, text = override.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name or "." in name:
            raise ConfigError(None, f"override {override!r} is malformed",
                              expected="section.key=value, e.g. logging.folder=runs/a or optimization.lr=5e-4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(key, f"override value {text!r} is not valid YAML",
                              found=" ".join(str(err).split())) from None
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(section, "is not a mapping", found=_describe(target))
        target[name] = value
    return merged


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read and validate a YAML config (PyYAML ``safe_load``): a file, or a shipped config's name
    (:func:`resolve_config`), with ``section.key=value`` overrides applied before validation."""
    path = resolve_config(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise ConfigError(None, "file not found", expected="an existing YAML file or a shipped config: "
                          + ", ".join(shipped_configs()), found=f"no file at {path}", source=str(path)) from None
    except yaml.YAMLError as err:
        raise ConfigError(None, "is not valid YAML", found=" ".join(str(err).split()),
                          source=str(path)) from None
    try:
        return config_from_dict(apply_overrides(_mapping({} if data is None else data, ""), list(overrides)))
    except ConfigError as err:
        raise err.located(str(path)) from None


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write ``cfg.to_dict()`` as YAML, atomically; :func:`load_config` reads it back equal."""
    return atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Build and validate a config from a nested dict of YAML values."""
    sections = _mapping(d, "")
    _reject_unknown(sections, TrainConfig, "")
    hints = typing.get_type_hints(TrainConfig)
    built = {f.name: _build_section(hints[f.name], sections.get(f.name), f.name)
             for f in fields(TrainConfig)}
    cfg = TrainConfig(**built)
    _check_consistency(cfg)
    return cfg


# ---- building and validation -------------------------------------------------------------

def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key or None, "is not a mapping" if key else "top level is not a mapping",
                          expected="a mapping of key: value lines",
                          found=f"{type(value).__name__} {value!r:.60}")
    return {str(k): v for k, v in value.items()}


def _reject_unknown(values: dict[str, Any], cls: type, prefix: str) -> None:
    names = [f.name for f in fields(cls)]
    for key in values:
        if key not in names:
            path = f"{prefix}.{key}" if prefix else key
            close = difflib.get_close_matches(key, names, n=1)
            raise ConfigError(path, "is not a known key",
                              expected=f"one of {', '.join(names)}",
                              found=f"'{key}'",
                              hint=f"the closest valid key is {prefix + '.' if prefix else ''}"
                                   f"{close[0]}" if close else None)


def _build_section(cls: type, raw: Any, name: str) -> Any:
    values = _mapping(raw, name)
    _reject_unknown(values, cls, name)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if f.name not in values:
            continue
        key = f"{name}.{f.name}"
        value = _coerce(key, values[f.name], hints[f.name])
        if f.metadata:
            _check_bounds(key, value, f.metadata)
        kwargs[f.name] = value
    return cls(**kwargs)


_NUMBER_TEXT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; floats accept ints and number text
    (PyYAML reads ``1e-3``, without a dot, as text)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, "has an unknown value",
                              expected=f"one of {', '.join(map(str, args))}",
                              found=_describe(value))
        return value
    if origin in (types.UnionType, typing.Union):
        inner = next(a for a in args if a is not type(None))
        return None if value is None else _coerce(key, value, inner)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(key, "has the wrong type",
                              expected=f"a list of {len(args)} numbers", found=_describe(value))
        return tuple(_coerce(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))
    if tp is float:
        if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value):
            return float(value)
        raise ConfigError(key, "has the wrong type", expected="a finite number",
                          found=_describe(value))
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[tp](value)
    if not ok:
        raise ConfigError(key, "has the wrong type",
                          expected={bool: "true or false", int: "a whole number",
                                    str: "text"}[tp],
                          found=_describe(value))
    return value


def _check_bounds(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if value is None:
        return
    items = list(enumerate(value)) if isinstance(value, tuple) else [(None, value)]
    lo, hi, open_lo = meta["lo"], meta["hi"], meta["open_lo"]
    interval = f"{'(' if open_lo else '['}{lo if lo is not None else '-inf'}, " \
               f"{hi if hi is not None else 'inf'}]"
    for index, number in items:
        too_low = lo is not None and (number <= lo if open_lo else number < lo)
        too_high = hi is not None and number > hi
        if too_low or too_high:
            where = key if index is None else f"{key}[{index}]"
            raise ConfigError(where, "is out of range",
                              expected=f"a value in {interval}", found=repr(number))
    if meta["ordered"] and value[0] > value[1]:
        raise ConfigError(key, "has its minimum above its maximum",
                          expected="[min, max] with min <= max", found=repr(list(value)))


def _check_consistency(cfg: TrainConfig) -> None:
    """Checks that involve several keys."""
    if cfg.meta.model_name not in MODEL_SIZES:
        close = difflib.get_close_matches(cfg.meta.model_name, list(MODEL_SIZES), n=1)
        raise ConfigError("meta.model_name", "is not a known model size",
                          expected=f"one of {', '.join(MODEL_SIZES)}",
                          found=repr(cfg.meta.model_name),
                          hint=f"the closest valid name is {close[0]}" if close else None)
    patch, crop = cfg.mask.patch_size, cfg.data.crop_size
    if crop % patch or crop < 2 * patch:
        raise ConfigError("data.crop_size", "does not fit the patch size",
                          expected=f"a multiple of mask.patch_size {patch}, at least 2 patches",
                          found=str(crop))
    dim, _, heads, _ = encoder_dims(cfg)
    if dim % heads:
        raise ConfigError("run.num_heads" if cfg.run.num_heads else "run.embed_dim",
                          "does not split the encoder width evenly",
                          expected="embed_dim divisible by num_heads",
                          found=f"embed_dim {dim}, num_heads {heads}")
    pred_dim, _, pred_heads = predictor_dims(cfg)
    if pred_dim % pred_heads:
        raise ConfigError("meta.pred_emb_dim", "does not split evenly into predictor heads",
                          expected=f"a multiple of the predictor's {pred_heads} heads",
                          found=str(pred_dim),
                          hint="change meta.pred_emb_dim or set run.pred_num_heads")
    if cfg.optimization.warmup > cfg.optimization.epochs:
        raise ConfigError("optimization.warmup", "is longer than the run",
                          expected=f"at most optimization.epochs ({cfg.optimization.epochs})",
                          found=str(cfg.optimization.warmup))
    if cfg.run.monitor_knn and not cfg.run.monitor_every:
        raise ConfigError("run.monitor_knn", "has no effect with the monitor off",
                          expected="run.monitor_every > 0, or run.monitor_knn: 0",
                          found=f"monitor_knn {cfg.run.monitor_knn}, monitor_every 0")
    if cfg.run.monitor_knn and cfg.run.monitor_knn_k > cfg.run.monitor_knn:
        raise ConfigError("run.monitor_knn_k", "asks for more neighbours than the memory bank holds",
                          expected=f"at most run.monitor_knn ({cfg.run.monitor_knn})",
                          found=str(cfg.run.monitor_knn_k))
    floor = context_floor(cfg.mask, (crop // patch, crop // patch))
    if cfg.mask.min_keep >= floor:
        raise ConfigError("mask.min_keep", "can never be met",
                          expected=f"less than {floor}, the patches of the smallest context "
                                   f"block on the {crop // patch} x {crop // patch} grid",
                          found=str(cfg.mask.min_keep),
                          hint="lower mask.min_keep or raise mask.enc_mask_scale[0]")
