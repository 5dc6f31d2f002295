"""Specification of the trainer config: the official schema, defaults, and strict validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from ijepa.config import (MODEL_SIZES, ConfigError, TrainConfig, config_from_dict, encoder_dims,
                          load_config, predictor_dims, save_config)
from ijepa.masks import MultiBlockMasker
from jepa_eval.core.errors import JepaEvalError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OFFICIAL = CONFIGS / "in1k_vith14_ep300.yaml"


def official_dict() -> dict:
    return yaml.safe_load(OFFICIAL.read_text())


def with_value(key: str, value: object, base: dict | None = None) -> dict:
    """A copy of ``base`` (default: the official config) with ``section.key`` set."""
    d = copy.deepcopy(official_dict() if base is None else base)
    section, name = key.split(".")
    d.setdefault(section, {})[name] = value
    return d


def rejected(d: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict(d)
    return info.value


def test_official_vith14_config_loads_with_the_published_values() -> None:
    cfg = load_config(OFFICIAL)
    assert (cfg.data.batch_size, cfg.data.crop_size, cfg.data.crop_scale) == (128, 224, (0.3, 1.0))
    assert cfg.mask.patch_size == 14 and cfg.mask.num_pred_masks == 4 and cfg.mask.min_keep == 10
    assert cfg.mask.pred_mask_scale == (0.15, 0.2) and cfg.mask.enc_mask_scale == (0.85, 1.0)
    assert cfg.mask.aspect_ratio == (0.75, 1.5) and not cfg.mask.allow_overlap
    assert (cfg.meta.model_name, cfg.meta.pred_depth, cfg.meta.pred_emb_dim) == ("vit_huge", 12, 384)
    opt = cfg.optimization
    assert (opt.epochs, opt.warmup, opt.lr, opt.start_lr, opt.final_lr) == (300, 40, 1e-3, 2e-4, 1e-6)
    assert (opt.ema, opt.weight_decay, opt.final_weight_decay) == ((0.996, 1.0), 0.04, 0.4)
    assert encoder_dims(cfg) == (1280, 32, 16, 4.0)
    assert predictor_dims(cfg) == (384, 12, 16)


def test_official_block_style_yaml_with_placeholder_paths_loads_unchanged(tmp_path: Path) -> None:
    d = with_value("data.root_path", "$replace_this_with_absolute_path_to_your_datasets_directory")
    text = yaml.safe_dump(d, default_flow_style=False)  # lists as "- 0.3" lines, as upstream
    (tmp_path / "official.yaml").write_text(text)
    cfg = load_config(tmp_path / "official.yaml")
    assert cfg.data.root_path.startswith("$replace") and cfg.mask.pred_mask_scale == (0.15, 0.2)


def test_an_empty_file_means_the_official_values(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("")
    defaults = load_config(tmp_path / "empty.yaml").to_dict()
    official = load_config(OFFICIAL).to_dict()
    for section in ("mask", "meta", "optimization"):
        assert defaults[section] == official[section]
    assert defaults["data"]["batch_size"] == 128 and defaults["run"]["checkpoint_freq"] == 50


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_its_masks_can_be_sampled(path: Path) -> None:
    cfg = load_config(path)
    contexts, targets = MultiBlockMasker(cfg.mask, cfg.data.crop_size).sample(4)
    assert contexts[0].shape[1] > cfg.mask.min_keep and len(targets) == cfg.mask.num_pred_masks


def test_small_configs_override_the_named_size() -> None:
    tiny = load_config(CONFIGS / "cifar10_tiny.yaml")
    assert encoder_dims(tiny) == (128, 4, 4, 4.0) and predictor_dims(tiny) == (64, 3, 4)
    assert tiny.run.dataset == "cifar10" and tiny.data.crop_size // tiny.mask.patch_size == 8
    demo = load_config(CONFIGS / "digits_demo.yaml")
    assert encoder_dims(demo)[:3] == (64, 4, 4) and demo.run.dataset == "digits"


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "cifar10_tiny.yaml")
    save_config(cfg, tmp_path / "params.yaml")
    assert load_config(tmp_path / "params.yaml") == cfg
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == cfg.to_dict()
    assert set(cfg.to_dict()["run"]) >= {"seed", "monitor_every", "pred_num_heads", "log_every"}


def test_resume_path_follows_the_official_rule() -> None:
    base = with_value("logging.folder", "runs/a")
    assert config_from_dict(base).load_path is None
    latest = config_from_dict(with_value("meta.load_checkpoint", True, base))
    assert latest.load_path == Path("runs/a/jepa-latest.pth.tar")
    chosen = with_value("meta.read_checkpoint", "jepa-ep50.pth.tar",
                        with_value("meta.load_checkpoint", True, base))
    assert config_from_dict(chosen).load_path == Path("runs/a/jepa-ep50.pth.tar")


def test_floats_accept_whole_numbers_and_exponent_text(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("optimization:\n  lr: 1e-3\n  final_lr: 0\n")
    cfg = load_config(tmp_path / "c.yaml")  # PyYAML reads 1e-3 (no dot) as text
    assert cfg.optimization.lr == 0.001 and cfg.optimization.final_lr == 0.0
    assert isinstance(cfg.optimization.final_lr, float)


def test_an_empty_section_means_its_defaults() -> None:
    assert config_from_dict({"run": None}).run.device == "auto"


def test_unknown_key_names_its_path_and_suggests_the_closest() -> None:
    err = rejected(with_value("mask.pred_mask_scal", [0.15, 0.2]))
    assert err.key == "mask.pred_mask_scal"
    assert "the closest valid key is mask.pred_mask_scale." in str(err)


def test_unknown_section_suggests_the_closest() -> None:
    err = rejected({"optimisation": {"lr": 0.1}})
    assert err.key == "optimisation" and "the closest valid key is optimization." in str(err)


@pytest.mark.parametrize("key, value, path", [
    ("data.batch_size", "128", "data.batch_size"),
    ("data.batch_size", 12.5, "data.batch_size"),
    ("data.pin_mem", "yes", "data.pin_mem"),
    ("data.pin_mem", 1, "data.pin_mem"),
    ("mask.pred_mask_scale", 0.2, "mask.pred_mask_scale"),
    ("mask.pred_mask_scale", [0.1, 0.2, 0.3], "mask.pred_mask_scale"),
    ("mask.aspect_ratio", [0.75, "wide"], "mask.aspect_ratio[1]"),
    ("meta.model_name", 5, "meta.model_name"),
    ("meta.read_checkpoint", 7, "meta.read_checkpoint"),
    ("run.device", "gpu", "run.device"),
    ("run.loss", "l1", "run.loss"),
    ("run.embed_dim", True, "run.embed_dim"),
    ("optimization.lr", float("nan"), "optimization.lr"),
])
def test_wrong_types_name_the_key(key: str, value: object, path: str) -> None:
    err = rejected(with_value(key, value))
    assert err.key == path
    assert "has the wrong type" in str(err) or "has an unknown value" in str(err)


@pytest.mark.parametrize("changes, path", [
    ({"mask.pred_mask_scale": [0.15, 1.5]}, "mask.pred_mask_scale[1]"),
    ({"mask.enc_mask_scale": [0.0, 1.0]}, "mask.enc_mask_scale[0]"),
    ({"mask.pred_mask_scale": [0.3, 0.2]}, "mask.pred_mask_scale"),
    ({"mask.aspect_ratio": [0.0, 1.5]}, "mask.aspect_ratio[0]"),
    ({"mask.aspect_ratio": [-1.0, 1.5]}, "mask.aspect_ratio[0]"),
    ({"data.crop_size": 225}, "data.crop_size"),
    ({"data.batch_size": 0}, "data.batch_size"),
    ({"meta.pred_emb_dim": 100}, "meta.pred_emb_dim"),
    ({"run.embed_dim": 100}, "run.embed_dim"),
    ({"run.embed_dim": 128, "run.num_heads": 3}, "run.num_heads"),
    ({"optimization.epochs": 0}, "optimization.epochs"),
    ({"optimization.epochs": 10}, "optimization.warmup"),
    ({"optimization.ema": [0.996, 1.01]}, "optimization.ema[1]"),
    ({"optimization.ema": [-0.1, 1.0]}, "optimization.ema[0]"),
    ({"mask.min_keep": 225}, "mask.min_keep"),
    ({"run.monitor_knn": 1000}, "run.monitor_knn"),
    ({"run.monitor_every": 10, "run.monitor_knn": 10, "run.monitor_knn_k": 20}, "run.monitor_knn_k"),
])
def test_impossible_values_name_the_key(changes: dict, path: str) -> None:
    d = official_dict()
    for key, value in changes.items():
        d = with_value(key, value, d)
    err = rejected(d)
    assert err.key == path
    message = str(err)
    assert message.startswith(f"config key {path} ") and "Expected" in message and "Found" in message
    assert "\n" not in message


def test_unknown_model_name_lists_the_valid_ones() -> None:
    err = rejected(with_value("meta.model_name", "vit_hug"))
    assert err.key == "meta.model_name"
    assert all(name in str(err) for name in MODEL_SIZES) and "the closest valid name is vit_huge." in str(err)


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("mask:\n  pred_mask_scale: [0.15, 2.0]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "mask.pred_mask_scale[1]" and str(path) in str(info.value)
    assert isinstance(info.value, JepaEvalError)


def test_missing_unparsable_and_non_mapping_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "broken.yaml").write_text("mask: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(tmp_path / "list.yaml")


def test_default_config_is_the_same_as_building_from_nothing() -> None:
    assert config_from_dict({}) == TrainConfig()
