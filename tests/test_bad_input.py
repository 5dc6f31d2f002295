"""Bad input: every case ends with one paragraph saying what was expected and what was found,
exit code 2, no traceback (unless ``--debug``), and nothing partial left on disk.

Each row of :data:`CASES` builds one bad input in a fresh folder and gives the command line; the
same table is documented in docs/RELIABILITY.md (a test checks that every case id is there).
Commands run in-process through the console entry points (fast); two tests run a child process
to see the real exit code and stderr with and without ``--debug``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from helpers_ckpt import make_checkpoint
from helpers_transfer import make_dtd, make_eurosat, make_pets
from helpers_data import make_imagefolder, make_places365, write_image
from helpers_faults import Outcome, REPO, all_cache_entries_valid, cache_folders, result_files, run_child, \
    run_main, temp_leftovers, write_bytes
from jepa_eval.core.errors import JepaEvalError

RELIABILITY_DOC = REPO / "docs" / "RELIABILITY.md"


@dataclass
class Workspace:
    """Shared valid inputs (built once) and the fresh folder of one case."""

    ijepa: Path
    mae: Path
    data: Path
    tmp: Path

    @property
    def folder_data(self) -> str:
        return f"imagefolder:{self.data}"

    def eval_args(self, command: str, *extra: str, ckpt: Path | str | None = None,
                  data: str | None = None) -> list[str]:
        """``command --ckpt ... --data ...`` plus the private results/cache folders and --quiet."""
        return [command, "--ckpt", str(ckpt or self.ijepa), "--data", data or self.folder_data, *extra,
                *self.outputs()]

    def outputs(self) -> list[str]:
        return ["--results-dir", str(self.tmp / "results"), "--cache-dir", str(self.tmp / "cache"), "--quiet"]

    def yaml_file(self, name: str, content: object) -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump(content) if not isinstance(content, str) else content)
        return path


@dataclass(frozen=True)
class Case:
    """One bad input: ``build`` returns the argv; the message must contain ``found``.

    ``cached_ok``: the fault is only detectable after features were extracted, so complete,
    valid cache entries may remain (never partial ones). ``defect``: a known defect of the
    current code that makes the case fail (the test is a strict xfail until it is fixed).
    """

    id: str
    build: Callable[[Workspace], list[str]]
    found: str
    program: str = "jepa-eval"
    cached_ok: bool = False
    defect: str | None = None


def _truncated(ws: Workspace) -> Path:
    data = ws.ijepa.read_bytes()
    return write_bytes(ws.tmp / "truncated.pth.tar", data[: len(data) // 2])


def _saved(ws: Workspace, name: str, obj: object) -> Path:
    torch.save(obj, ws.tmp / name)
    return ws.tmp / name


def _nan_weight(ws: Workspace) -> Path:
    ckpt = torch.load(ws.ijepa, weights_only=True)
    ckpt["target_encoder"]["module.norm.weight"][3] = float("nan")
    return _saved(ws, "nan.pth.tar", ckpt)


def _folder(ws: Workspace, *, loose: bool = False, bad_image: bytes | None = None,
            empty_class: bool = False, splits: tuple[str, ...] = ("train", "val")) -> str:
    root = make_imagefolder(ws.tmp / "set", ["a", "b"], n_per_class=2, splits=splits)
    if loose:
        write_image(root / "train" / "stray.JPEG", (1, 2, 3))
    if bad_image is not None:
        write_bytes(root / "train" / "a" / "bad.JPEG", bad_image)
    if empty_class:
        (root / "train" / "c").mkdir()
    return f"imagefolder:{root}"


def _places_escape(ws: Workspace) -> list[str]:
    root = make_places365(ws.tmp / "places")
    listing = root / "places365_train_standard.txt"
    listing.write_text(listing.read_text() + "/../../../etc/passwd 0\n")
    return ws.eval_args("knn", "--data-root", str(root), data="places365")


def _crafted_pickle(ws: Workspace) -> Path:
    """A checkpoint whose unpickling would create the file ``pwned`` (via os.system)."""
    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {ws.tmp / 'pwned'}",))

    return _saved(ws, "crafted.pth", {"model": Payload()})


def _release(ws: Workspace, data: str, root: Path) -> list[str]:
    """``knn`` on ``data`` read from ``root``, a folder in torchvision's layouts."""
    return ws.eval_args("knn", "--k", "1", "--data-root", str(root), data=data)


def _eurosat_short_class(ws: Workspace) -> list[str]:
    root = make_eurosat(ws.tmp / "tv")
    for k in range(2, 6):  # Forest keeps one image: none left for train and val
        (root / "eurosat" / "2750" / "Forest" / f"Forest_{k}.jpg").unlink()
    return _release(ws, "eurosat", root)


def _dtd_without(ws: Workspace, name: str) -> list[str]:
    root = make_dtd(ws.tmp / "tv")
    (root / "dtd" / "dtd" / "labels" / name).unlink()
    return _release(ws, "dtd", root)


def _safetensors_unknown(ws: Workspace) -> Path:
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(2), "fc.bias": torch.zeros(1)}, ws.tmp / "other.safetensors")
    return ws.tmp / "other.safetensors"


def _suite(ws: Workspace, content: object) -> list[str]:
    return ["suite", str(ws.yaml_file("suite.yaml", content)), "--ckpt", f"m={ws.ijepa}", *ws.outputs()]


def _knn_entry(**extra: object) -> dict:
    return {"suite": "s", "protocols": [{"protocol": "knn", "dataset": "digits", **extra}]}


def _trainer(ws: Workspace, **sections: dict) -> list[str]:
    config = {"logging": {"folder": str(ws.tmp / "run")}, "data": {"root_path": str(ws.tmp)}}
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return ["train", "--config", str(ws.yaml_file("train.yaml", config)), "--quiet"]


def _unwritable_results(ws: Workspace) -> list[str]:
    """A results 'directory' that cannot be written: an existing regular file (works as root too)."""
    blocker = write_bytes(ws.tmp / "results", b"a file, not a folder")
    return ["knn", "--ckpt", str(ws.ijepa), "--data", ws.folder_data, "--k", "1", "--results-dir", str(blocker),
            "--cache-dir", str(ws.tmp / "cache"), "--quiet"]


CASES = [
    # checkpoints
    Case("ckpt-missing", lambda ws: ws.eval_args("knn", ckpt=ws.tmp / "nope.pth"), "no such file"),
    Case("ckpt-is-a-directory", lambda ws: ws.eval_args("knn", ckpt=ws.tmp), "a directory"),
    Case("ckpt-empty", lambda ws: ws.eval_args("knn", ckpt=write_bytes(ws.tmp / "e.pth", b"")), "0 bytes"),
    Case("ckpt-truncated", lambda ws: ws.eval_args("knn", ckpt=_truncated(ws)), "truncated"),
    Case("ckpt-not-a-dict", lambda ws: ws.eval_args("knn", ckpt=_saved(ws, "t.pth", torch.zeros(3))), "a Tensor"),
    Case("ckpt-unknown-layout",
         lambda ws: ws.eval_args("knn", ckpt=_saved(ws, "u.pth", {"weights": {"w": torch.zeros(2)}, "step": 3})),
         "top-level keys [weights, step]"),
    Case("ckpt-wrong-key", lambda ws: ws.eval_args("knn", "--ckpt-key", "student"), "under the key 'student'"),
    Case("ckpt-pickled-code", lambda ws: ws.eval_args("knn", ckpt=_crafted_pickle(ws)), "pickled posix.system"),
    Case("num-heads-not-dividing-width", lambda ws: ws.eval_args("knn", "--num-heads", "3"), "num_heads=3"),
    Case("image-size-not-multiple-of-patch", lambda ws: ws.eval_args("knn", "--image-size", "36"),
         "image_size=36"),
    Case("timm-unknown-model", lambda ws: ws.eval_args("knn", ckpt="timm:vit_nonexistent_model"),
         "vit_nonexistent_model"),
    Case("safetensors-unknown-layout", lambda ws: ws.eval_args("knn", ckpt=_safetensors_unknown(ws)),
         "top-level keys [conv.weight, fc.bias]"),
    Case("hub-id-not-in-cache-offline", lambda ws: ws.eval_args("knn", ckpt="hf:jepa-eval-tests/absent"),
         "models--jepa-eval-tests--absent"),
    Case("nan-weight-gives-nan-features", lambda ws: ws.eval_args("knn", ckpt=_nan_weight(ws)), "not finite"),
    # feature modes and devices
    Case("feature-mode-unknown", lambda ws: ws.eval_args("knn", "--mode", "gem"), "'gem'"),
    Case("cls-mode-on-ijepa", lambda ws: ws.eval_args("knn", "--mode", "cls"), "without one"),
    Case("device-unknown", lambda ws: ws.eval_args("knn", "--device", "tpu"), "'tpu'"),
    # datasets
    Case("dataset-unknown", lambda ws: ws.eval_args("knn", data="imagenet21k"), "'imagenet21k'"),
    Case("data-root-missing", lambda ws: ws.eval_args("knn", data=f"imagefolder:{ws.tmp / 'nope'}"),
         "does not exist"),
    Case("data-root-wrong-layout",
         lambda ws: ws.eval_args("knn", "--data-root", str(write_bytes(ws.tmp / "d" / "junk.txt", b"x").parent),
                                 data="cifar10"), "holds junk.txt"),
    Case("images-not-in-class-folders", lambda ws: ws.eval_args("knn", data=_folder(ws, loose=True)),
         "holds a/, b/, stray.JPEG"),
    Case("image-corrupt", lambda ws: ws.eval_args("knn", data=_folder(ws, bad_image=b"\xff\xd8garbage")),
         "bad.JPEG"),
    Case("image-zero-bytes", lambda ws: ws.eval_args("knn", data=_folder(ws, bad_image=b"")), "0 bytes"),
    Case("class-without-images", lambda ws: ws.eval_args("knn", data=_folder(ws, empty_class=True)),
         "'c'"),
    Case("eval-split-missing", lambda ws: ws.eval_args("knn", "--k", "1", data=_folder(ws, splits=("train",))),
         "split 'val' is missing", cached_ok=True),
    Case("list-file-path-escapes-root", _places_escape, "'/../../../etc/passwd'"),
    Case("dataset-folder-in-another-layout", lambda ws: _release(ws, "flowers102", make_pets(ws.tmp / "tv")),
         "(the layout of pets)"),
    Case("dataset-split-file-missing", lambda ws: _dtd_without(ws, "val1.txt"), "split file val1.txt is missing"),
    Case("dataset-partition-unknown", lambda ws: _release(ws, "dtd:11", make_dtd(ws.tmp / "tv")),
         "dtd has no partition 11"),
    Case("dataset-class-without-images", _eurosat_short_class, "no image of 'Forest'"),
    # protocol parameters
    Case("knn-k-larger-than-train-set", lambda ws: ws.eval_args("knn", "--k", "50"), "k = 50", cached_ok=True),
    Case("knn-k-zero", lambda ws: ws.eval_args("knn", "--k", "0"), "ks = (0,)", cached_ok=True),
    Case("lowshot-fraction-zero", lambda ws: ws.eval_args("lowshot", "--fraction", "0"), "0.0"),
    Case("lowshot-fraction-above-one", lambda ws: ws.eval_args("lowshot", "--fraction", "1.5"), "1.5"),
    Case("lowshot-fraction-leaves-class-empty", lambda ws: ws.eval_args("lowshot", "--fraction", "0.1"),
         "class sizes", cached_ok=True),
    Case("lowshot-more-shots-than-images", lambda ws: ws.eval_args("lowshot", "--shots", "10"),
         "class sizes", cached_ok=True),
    Case("subset-file-names-missing-images",
         lambda ws: ws.eval_args("lowshot", "--subset-file", str(write_bytes(ws.tmp / "s.txt", b"nope_1.JPEG\n"))),
         "nope_1.JPEG"),
    Case("subset-file-path-escapes-root",
         lambda ws: ws.eval_args("lowshot", "--subset-file",
                                 str(write_bytes(ws.tmp / "s.txt", b"../../etc/passwd\n"))),
         "../../etc/passwd"),
    Case("linear-batchnorm-unknown", lambda ws: ws.eval_args("linear", "--batchnorm", "maybe"), "'maybe'"),
    Case("attentive-model-without-patch-tokens", lambda ws: ws.eval_args("attentive", ckpt="pixels:32"),
         "the raw-pixel baseline"),
    Case("attentive-zero-probes", lambda ws: ws.eval_args("attentive", "--lrs", ""), "a grid of zero probes"),
    Case("attentive-class-missing-from-held-out", lambda ws: ws.eval_args("attentive"),
         "2 of 2 classes with none held out", cached_ok=True),
    # outputs
    Case("results-dir-not-writable", _unwritable_results, "results", cached_ok=True),
    # suite and protocol files
    Case("suite-file-missing", lambda ws: ["suite", str(ws.tmp / "nope.yaml"), "--ckpt", str(ws.ijepa), *ws.outputs()],
         "nope.yaml"),
    Case("suite-not-yaml", lambda ws: _suite(ws, "protocols: [knn\n"), "not valid YAML"),
    Case("suite-unknown-entry-key", lambda ws: _suite(ws, _knn_entry(neighbours=20)), "'neighbours'"),
    Case("suite-unknown-hyper-parameter", lambda ws: _suite(ws, _knn_entry(params={"kk": 3})), "'kk'"),
    Case("suite-modes-wrong-type", lambda ws: _suite(ws, _knn_entry(modes="avgpool")), "'avgpool'"),
    Case("suite-unknown-protocol",
         lambda ws: _suite(ws, {"suite": "s", "protocols": [{"protocol": "svm", "dataset": "digits"}]}), "'svm'"),
    # trainer configs
    Case("trainer-config-missing", lambda ws: ["train", "--config", str(ws.tmp / "nope.yaml")], "nope.yaml",
         program="ijepa"),
    Case("trainer-config-unknown-key", lambda ws: _trainer(ws, optimization={"epoch": 3}), "'epoch'",
         program="ijepa"),
    Case("trainer-config-wrong-type", lambda ws: _trainer(ws, optimization={"epochs": "ten"}), "str 'ten'",
         program="ijepa"),
    Case("trainer-config-out-of-range", lambda ws: _trainer(ws, mask={"pred_mask_scale": [0.2, 1.5]}), "1.5",
         program="ijepa"),
    Case("trainer-crop-not-multiple-of-patch", lambda ws: _trainer(ws, data={"crop_size": 36},
                                                                   mask={"patch_size": 8}), "36", program="ijepa"),
    Case("trainer-heads-not-dividing-width",
         lambda ws: _trainer(ws, run={"embed_dim": 64, "num_heads": 3}), "num_heads 3", program="ijepa"),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One I-JEPA and one MAE checkpoint (64 wide, depth 2, 32 px, patch 8) and a 2-class folder."""
    root = tmp_path_factory.mktemp("shared")
    return {"ijepa": make_checkpoint("ijepa", root / "ijepa.pth.tar", embed_dim=64, num_heads=1),
            "mae": make_checkpoint("mae", root / "mae.pth", embed_dim=64, num_heads=1),
            "data": make_imagefolder(root / "folder", ["a", "b"], n_per_class=3)}


@pytest.fixture()
def ws(shared: dict[str, Path], tmp_path: Path) -> Workspace:
    return Workspace(shared["ijepa"], shared["mae"], shared["data"], tmp_path)


def _check_left_nothing_partial(case: Case, ws: Workspace) -> None:
    assert result_files(ws.tmp / "results") == []
    assert temp_leftovers(ws.tmp) == []
    if case.cached_ok:
        assert all_cache_entries_valid(ws.tmp / "cache")
    else:
        assert cache_folders(ws.tmp / "cache") == []


def _params(cases: list[Case]) -> list:
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.defect)] if c.defect else [])
            for c in cases]


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input_gives_one_paragraph_exit_2_and_leaves_nothing_partial(case: Case, ws: Workspace) -> None:
    outcome = run_main(case.program, case.build(ws))
    assert outcome.code == 2, outcome.stderr
    assert "Traceback" not in outcome.stderr
    error = outcome.stderr.split("error:", 1)[-1]
    assert "error:" in outcome.stderr and "\n\n" not in error.strip(), outcome.stderr
    message = " ".join(error.split())
    assert "Expected" in message, message
    unwrapped = "".join(error.split())  # rich may break a long path inside a word
    assert "".join(case.found.split()) in unwrapped, message
    _check_left_nothing_partial(case, ws)
    assert not (ws.tmp / "pwned").exists()
    assert not (ws.tmp / "run").exists() or not any((ws.tmp / "run").glob("*.pth.tar"))


def test_there_are_at_least_25_bad_input_cases_with_unique_ids() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 25 and len(set(ids)) == len(ids)


def test_every_bad_input_case_is_documented_in_reliability_md() -> None:
    text = RELIABILITY_DOC.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in text]
    assert missing == []


def test_debug_lets_the_error_through_with_its_traceback(ws: Workspace) -> None:
    with pytest.raises(JepaEvalError, match="0 bytes"):
        run_main("jepa-eval", ["--debug", *ws.eval_args("knn", ckpt=write_bytes(ws.tmp / "e.pth", b""))])


def test_a_bad_checkpoint_pickle_is_refused_and_never_runs(ws: Workspace) -> None:
    outcome = run_main("jepa-eval", ws.eval_args("knn", ckpt=_crafted_pickle(ws)))
    assert outcome.code == 2 and "--trust-checkpoint" in outcome.message
    assert not (ws.tmp / "pwned").exists()


def test_the_real_command_exits_2_without_traceback_and_shows_one_with_debug(ws: Workspace) -> None:
    args = ws.eval_args("knn", ckpt=write_bytes(ws.tmp / "e.pth", b""))
    plain = run_child("jepa-eval", args, ws.tmp / "plain")
    assert plain.code == 2 and "Traceback" not in plain.stderr and "0 bytes" in Outcome(0, "", plain.stderr).message
    debug = run_child("jepa-eval", ["--debug", *args], ws.tmp / "debug")
    assert debug.code not in (0, 2) and "Traceback" in debug.stderr and "JepaEvalError" in debug.stderr
