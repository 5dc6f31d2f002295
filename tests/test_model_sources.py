"""Model sources: ``.safetensors`` files of every family's layout (read without pickle), ``hf:`` and
``hf-hub:`` files of the Hugging Face cache, timm's pretrained tags (the hub cache, or torch hub's
for URL weights: the official I-JEPA files), offline first, and the provenance a record keeps.

Every cache is built on the fly in its exact layout (tests/helpers_hub.py); sockets are disabled
in every test of this file, so none can reach the network.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers_ckpt import make_checkpoint, save_safetensors
from helpers_hub import TINY_HUB_TAG, TINY_IJEPA_TAG, TINY_IJEPA_URL, hub_cache_entry  # registers the tiny tags
from reference_vits import ijepa_encoder
from jepa_eval.backbones.backbone import Backbone
from jepa_eval.backbones.load import load_backbone
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.hashing import file_sha256
from jepa_eval.features.splits import ExtractOptions
from jepa_eval.pipeline.evaluate import run_protocol
from jepa_eval.protocols import get_protocol
from jepa_eval.protocols.knn import KNNConfig
from jepa_eval.results.record import read_record, write_record

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture()
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache that huggingface_hub uses for this test."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))


def _tokens(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return backbone.model.forward_features(images)


def _raw(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)  # our own test file


# --- .safetensors --------------------------------------------------------------------------------

@pytest.mark.parametrize(("family", "layout", "extra", "key"), [
    ("ijepa", "train", {}, "target_encoder"),        # target_encoder.module.blocks.0...
    ("ijepa", "released", {}, None),                 # flat
    ("mae", "train", {}, "model"),                   # model.blocks.0..., model.decoder_...
    ("dino", "train", {}, "teacher"),                # teacher.backbone.blocks.0...
    ("dino", "released", {}, None),
    ("dinov2", "train", {"num_reg_tokens": 4}, "teacher"),
    ("dinov2", "released", {"num_reg_tokens": 4, "chunk_size": 1}, None),
    ("timm", "train", {}, None),
])
def test_safetensors_of_every_layout_load_like_the_pth_file(tmp_path: Path, family: str, layout: str,
                                                            extra: dict, key: str | None) -> None:
    pth = make_checkpoint(family, tmp_path / "ckpt.pth", layout=layout, **extra)
    exported = save_safetensors(_raw(pth), tmp_path / "ckpt.safetensors")
    ours, reference = load_backbone(str(exported), num_heads=2), load_backbone(str(pth), num_heads=2)
    assert (ours.family, ours.ckpt_key, ours.arch) == (reference.family, key, reference.arch)
    assert torch.equal(_tokens(ours, _images()), _tokens(reference, _images()))
    assert ours.sha256 == file_sha256(exported)


def test_a_flat_ijepa_target_encoder_export_gives_the_official_features(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _raw(make_checkpoint("ijepa", tmp_path / "jepa.pth.tar"))
    flat = {name.removeprefix("module."): tensor for name, tensor in raw["target_encoder"].items()}
    exported = save_safetensors(flat, tmp_path / "target_encoder.safetensors")

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("a safetensors file went through torch.load")

    monkeypatch.setattr(torch, "load", no_pickle)
    backbone = load_backbone(str(exported), num_heads=2)
    assert backbone.family == "ijepa" and backbone.default_mode == "avgpool"
    torch.testing.assert_close(_tokens(backbone, _images()), ijepa_encoder(flat, _images(), 2, prefix=""),
                               rtol=1e-5, atol=1e-5)


def test_a_safetensors_file_of_an_unknown_layout_names_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2), "fc.bias": torch.zeros(1)}, path)
    with pytest.raises(JepaEvalError, match=r"no checkpoint family recognises.*\[conv.weight, fc.bias\]"):
        load_backbone(str(path))
    transformers = tmp_path / "model.safetensors"
    save_file({"embeddings.patch_embeddings.projection.weight": torch.zeros(2),
               "encoder.layer.0.attention.attention.query.weight": torch.zeros(2)}, transformers)
    with pytest.raises(JepaEvalError, match="Hugging Face transformers export.*hf-hub:timm/"):
        load_backbone(str(transformers))
    pickled = tmp_path / "pickled.safetensors"
    torch.save({"cls_token": torch.zeros(1)}, pickled)
    with pytest.raises(JepaEvalError, match="cannot read .*pickled.safetensors as a safetensors file"):
        load_backbone(str(pickled))


# --- hf: and hf-hub: ---------------------------------------------------------------------------------

def test_hf_specs_resolve_in_the_cache_by_branch_tag_or_commit(tmp_path: Path, hub_cache: Path) -> None:
    main = make_checkpoint("dino", tmp_path / "main.pth", layout="released", seed=1)
    tagged = make_checkpoint("dino", tmp_path / "v1.pth", layout="released", seed=2)
    hub_cache_entry(hub_cache, "org/tiny", {"model.safetensors": save_safetensors(_raw(main), tmp_path / "a.st")},
                    commit=COMMIT)
    hub_cache_entry(hub_cache, "org/tiny", {"model.safetensors": save_safetensors(_raw(tagged), tmp_path / "b.st")},
                    commit=OTHER_COMMIT, refs=("v1",))
    x = _images()
    for spec, source, commit in [("hf:org/tiny", main, COMMIT), ("hf-hub:org/tiny", main, COMMIT),
                                 ("hf:org/tiny@v1", tagged, OTHER_COMMIT), (f"hf:org/tiny@{OTHER_COMMIT}", tagged,
                                                                            OTHER_COMMIT)]:
        backbone = load_backbone(spec, num_heads=2)
        assert torch.equal(_tokens(backbone, x), _tokens(load_backbone(str(source), num_heads=2), x)), spec
        assert backbone.origin == {"hub_id": "org/tiny", "hub_revision": commit, "hub_file": "model.safetensors"}
        assert backbone.source.endswith(f"models--org--tiny/snapshots/{commit}/model.safetensors")


def test_hf_falls_back_to_pytorch_model_bin_and_takes_a_named_file(tmp_path: Path, hub_cache: Path) -> None:
    ijepa = make_checkpoint("ijepa", tmp_path / "jepa.pth.tar")
    hub_cache_entry(hub_cache, "org/ijepa-run", {"pytorch_model.bin": ijepa, "ckpts/jepa-ep300.pth.tar": ijepa},
                    commit=COMMIT)
    fallback = load_backbone("hf:org/ijepa-run", num_heads=2)
    named = load_backbone("hf:org/ijepa-run/ckpts/jepa-ep300.pth.tar", num_heads=2)
    assert (fallback.origin["hub_file"], named.origin["hub_file"]) == ("pytorch_model.bin", "ckpts/jepa-ep300.pth.tar")
    assert fallback.ckpt_key == named.ckpt_key == "target_encoder"  # the official file: its target encoder
    reference = ijepa_encoder(_raw(ijepa)["target_encoder"], _images(), 2)
    torch.testing.assert_close(_tokens(named, _images()), reference, rtol=1e-5, atol=1e-5)


def test_a_hub_id_missing_from_the_cache_is_refused_offline_naming_the_cache(tmp_path: Path, hub_cache: Path) -> None:
    hub_cache_entry(hub_cache, "org/tiny", {"config.json": make_checkpoint("timm", tmp_path / "t.pth")},
                    commit=COMMIT)
    with pytest.raises(JepaEvalError) as missing:
        load_backbone("hf:org/absent")
    text = str(missing.value)
    assert "hf:org/absent is not in the Hugging Face cache, and downloading is off" in text
    assert f"no folder models--org--absent/ in the cache {hub_cache}" in text and "--download" in text
    with pytest.raises(JepaEvalError, match=r"snapshot 0123456789ab with \['config.json'\]"):
        load_backbone("hf:org/tiny")
    with pytest.raises(JepaEvalError, match="bad Hugging Face model spec"):
        load_backbone("hf:justaname")


def test_download_asks_the_network_only_after_the_cache_and_only_when_allowed(tmp_path: Path, hub_cache: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    source = save_safetensors(_raw(make_checkpoint("timm", tmp_path / "t.pth")), tmp_path / "t.st")
    real, calls = huggingface_hub.hf_hub_download, []

    def fake_hub(repo_id: str, filename: str, *, revision: str | None = None, local_files_only: bool = False) -> str:
        calls.append((filename, local_files_only))
        if not local_files_only:  # what a download does: put the file into the cache
            hub_cache_entry(hub_cache, repo_id, {filename: source}, commit=COMMIT)
        return real(repo_id, filename, revision=revision, local_files_only=True)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hub)
    with pytest.raises(JepaEvalError, match="downloading is off"):
        load_backbone("hf:org/new", num_heads=2)
    assert calls == [("model.safetensors", True), ("pytorch_model.bin", True)]
    backbone = load_backbone("hf:org/new", num_heads=2, download=True)
    assert calls[2:] == [("model.safetensors", True), ("pytorch_model.bin", True), ("model.safetensors", False)]
    assert backbone.origin["hub_revision"] == COMMIT


def test_a_failed_download_is_one_paragraph(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(repo_id: str, filename: str, *, revision: str | None = None, local_files_only: bool = False) -> str:
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(JepaEvalError, match="downloading model.safetensors of hf:org/x failed.*Network is unreachable"):
        load_backbone("hf:org/x", download=True)


# --- timm pretrained tags ------------------------------------------------------------------------------

def test_a_timm_tag_with_a_hub_repository_loads_its_weights_from_the_cache(tmp_path: Path, hub_cache: Path) -> None:
    import timm

    trained = timm.create_model(TINY_HUB_TAG, pretrained=False, num_classes=0)
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, weights)
    hub_cache_entry(hub_cache, f"timm/{TINY_HUB_TAG}", {"model.safetensors": weights}, commit=COMMIT)
    backbone = load_backbone(f"timm:{TINY_HUB_TAG}")
    with torch.no_grad():
        assert torch.equal(_tokens(backbone, _images()), trained.forward_features(_images()))
    assert backbone.origin == {"file": backbone.origin["file"], "hub_id": f"timm/{TINY_HUB_TAG}",
                               "hub_revision": COMMIT, "hub_file": "model.safetensors"}
    assert any("mean (0.5, 0.5, 0.5)" in note for note in backbone.notes)
    bare = load_backbone("timm:vit_test_32")  # no tag: random weights, as before
    assert bare.origin == {} and "random initialisation (seed 0)" in bare.notes


@pytest.fixture()
def torch_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch hub's folder for this test; URL weights live in its checkpoints/."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    return tmp_path / "torch-hub" / "checkpoints"


def test_the_ijepa_tag_loads_the_official_files_target_encoder_where_timm_takes_the_context_encoder(
        tmp_path: Path, torch_hub: Path) -> None:
    import timm

    with pytest.raises(JepaEvalError, match="IN1K-vit.test.8-32px.pth.tar is not in torch hub's cache.*--download"):
        load_backbone(f"timm:{TINY_IJEPA_TAG}")
    official = make_checkpoint("ijepa", torch_hub / TINY_IJEPA_URL.rsplit("/", 1)[-1])
    raw, x = _raw(official), _images()
    backbone = load_backbone(f"timm:{TINY_IJEPA_TAG}")
    assert backbone.ckpt_key == "target_encoder" and backbone.origin == {"file": str(official), "url": TINY_IJEPA_URL}
    torch.testing.assert_close(_tokens(backbone, x), ijepa_encoder(raw["target_encoder"], x, 2), rtol=1e-5, atol=1e-5)
    assert any("target encoder" in note and "context encoder ('encoder')" in note for note in backbone.notes)
    timms_own = timm.create_model(TINY_IJEPA_TAG, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay={"file": str(official)})
    with torch.no_grad():
        torch.testing.assert_close(timms_own.forward_features(x), ijepa_encoder(raw["encoder"], x, 2),
                                   rtol=1e-5, atol=1e-5)
    given = load_backbone(f"timm:{TINY_IJEPA_TAG}", weights=str(official), ckpt_key="encoder")
    assert given.ckpt_key == "encoder" and any("context encoder" in note for note in given.notes)


def test_an_unknown_timm_tag_lists_the_known_ones() -> None:
    with pytest.raises(JepaEvalError, match=r"no pretrained tag 'vit_test_32.nope'.*vit_test_32.tiny_hub"):
        load_backbone("timm:vit_test_32.nope")


# --- provenance in the result record -----------------------------------------------------------------

def test_the_record_says_where_a_hub_model_came_from(tmp_path: Path, hub_cache: Path) -> None:
    weights = save_safetensors(_raw(make_checkpoint("ijepa", tmp_path / "j.pth", layout="released")),
                               tmp_path / "j.st")
    hub_cache_entry(hub_cache, "org/tiny-ijepa", {"model.safetensors": weights}, commit=COMMIT)
    spec = ModelSpec("hf:org/tiny-ijepa", num_heads=2)
    options = ExtractOptions(device="cpu", cache_dir=str(tmp_path / "cache"), progress=False)
    record = run_protocol(get_protocol("knn"), KNNConfig(ks=(5,)), spec, spec.load(), "digits", "avgpool", options)
    written = write_record(record, tmp_path / "results")
    model = json.loads(written.read_text())["model"]
    assert read_record(written).model == record.model
    assert model["name"] == "hf:org/tiny-ijepa" and model["sha256"] == file_sha256(weights)
    assert (model["hub_id"], model["hub_revision"], model["hub_file"]) == ("org/tiny-ijepa", COMMIT,
                                                                           "model.safetensors")
    assert any("context encoder" in note for note in model["notes"])  # an I-JEPA repository's flat file


def test_records_written_before_the_provenance_fields_load_unchanged(tmp_path: Path) -> None:
    old = {"protocol": "knn", "protocol_version": "1",
           "model": {"name": "m", "path": "m.pth", "sha256": "ab", "family": "ijepa", "ckpt_key": None, "arch": {}},
           "dataset": {"name": "digits"}, "features": {"mode": "avgpool"}, "params": {},
           "metrics": [{"name": "top1", "value": 50.0, "k": 20}], "summary": {}, "run_id": "r", "created": "c",
           "command": ["x"], "environment": {"python": "3"}, "wall_time_s": 1.0, "schema": 1}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    record = read_record(path)
    assert record.model.hub_id is None and record.model.notes is None
    assert record.to_json() == old
