"""Faults: kills, interrupts, torn writes, concurrent runs, hostile files and no network.

What is promised: a checkpoint, cache entry or result file on disk is either complete or not
read back; a rerun redoes only what is missing; an interrupted command stops with exit code 130
(SIGINT) or 143 (SIGTERM), no traceback, and says what was kept. Child processes are used where
only a real process shows the behaviour (signals, SIGKILL, two runs at once); everything else is
injected in-process with monkeypatch. Slow variants (many trials, real processes) are marked slow.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import tarfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import jepa_eval.features.cache
import jepa_eval.protocols.knn
import jepa_eval.results.record
import jepa_eval.features.splits
from helpers_ckpt import make_checkpoint
from helpers_data import make_imagefolder
from helpers_faults import Child, all_cache_entries_valid, cache_folders, logged_losses, result_files, \
    run_main, smooth_images, temp_leftovers, trainer_config, wait_until, write_bytes
from ijepa.checkpoint import load_checkpoint
from ijepa.config import config_from_dict
from ijepa.train import train
from jepa_eval.core.atomic import atomic_path
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.results.record import load_records
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.features.splits import ExtractOptions
from jepa_eval.pipeline.suite import load_suite, run_suite

ITERS_PER_EPOCH, EPOCHS = 4, 3


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint("ijepa", tmp_path_factory.mktemp("model") / "ijepa.pth.tar", embed_dim=64, num_heads=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"imagefolder:{make_imagefolder(tmp_path_factory.mktemp('data') / 'set', ['a', 'b'], n_per_class=3)}"


def knn_args(model: Path, data: str, out: Path, *extra: str) -> list[str]:
    return ["knn", "--ckpt", str(model), "--data", data, "--k", "1,2", "--results-dir", str(out / "results"),
            "--cache-dir", str(out / "cache"), "--quiet", *extra]


def interrupt_self(*args: object, **kwargs: object) -> None:
    """Send this process SIGINT, as Ctrl-C does; its handler raises in the caller."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)


class CountingExtract:
    """Wraps ``features.splits.extract_features``: counts calls; Ctrl-C on call number ``fail_on``."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.real, self.calls, self.fail_on = jepa_eval.features.splits.extract_features, 0, fail_on

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        if self.calls == self.fail_on:
            interrupt_self()
        return self.real(*args, **kwargs)


# ---------------------------------------------------------------------------- trainer under SIGKILL


@pytest.fixture(scope="module")
def training(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """32 training pictures (4 steps an epoch at batch 8) and the uninterrupted run's losses."""
    images = smooth_images(tmp_path_factory.mktemp("train") / "imgs", classes=2, per_class=16)
    reference = train(config_from_dict(trainer_config(images, tmp_path_factory.mktemp("ref"), epochs=EPOCHS)),
                      progress=False)
    assert len(reference.losses) == ITERS_PER_EPOCH * EPOCHS
    return {"images": images, "losses": reference.losses}


def _kill_and_resume(trial: int, training: dict[str, object], tmp: Path) -> None:
    """SIGKILL ``ijepa train`` after a seeded number of logged steps plus a seeded delay, then resume."""
    rng = np.random.default_rng(trial)
    steps_before_kill = int(rng.integers(1, ITERS_PER_EPOCH * EPOCHS))
    delay = float(rng.uniform(0.0, 0.3))
    run = tmp / f"trial{trial}"
    config_path = tmp / f"trial{trial}.yaml"
    config_path.write_text(yaml.safe_dump(trainer_config(training["images"], run, epochs=EPOCHS)))
    child = Child("ijepa", ["train", "--config", str(config_path), "--quiet"], tmp / f"logs{trial}")
    log = run / "jepa_r0.csv"
    wait_until(lambda: len(logged_losses(log)) >= steps_before_kill, timeout=240, child=child)
    time.sleep(delay)
    child.process.send_signal(signal.SIGKILL)
    child.wait()

    for path in run.glob("*.pth.tar"):  # every checkpoint on disk is complete
        torch.load(path, map_location="cpu", weights_only=True)
        load_checkpoint(path)
    resume = (run / "jepa-latest.pth.tar").exists()
    result = train(config_from_dict(trainer_config(training["images"], run, epochs=EPOCHS, resume=resume)),
                   progress=False)
    assert result.epochs == EPOCHS and result.steps == ITERS_PER_EPOCH * EPOCHS

    reference = training["losses"]
    logged = logged_losses(log)
    assert sorted(logged) == list(range(1, len(reference) + 1))  # every step logged, killed or resumed
    for step, values in logged.items():  # a step logged twice (before the kill, after resuming) agrees
        np.testing.assert_allclose(values, reference[step - 1], rtol=0, atol=2e-6, err_msg=f"step {step}")
    leftovers = temp_leftovers(run)  # a kill inside a save leaves at most a temp file, never read
    assert all(p.name.startswith(".jepa-") for p in leftovers)


def test_trainer_killed_twice_at_random_points_keeps_a_loadable_checkpoint_and_resumes_exactly(
        training: dict[str, object], tmp_path: Path) -> None:
    for trial in range(2):
        _kill_and_resume(trial, training, tmp_path)


@pytest.mark.slow
def test_trainer_killed_ten_times_at_random_points_keeps_a_loadable_checkpoint_and_resumes_exactly(
        training: dict[str, object], tmp_path: Path) -> None:
    for trial in range(10):
        _kill_and_resume(100 + trial, training, tmp_path)


# ---------------------------------------------------------------------------- evaluation interrupted


def test_extraction_interrupted_after_the_train_split_keeps_it_and_a_rerun_extracts_only_the_rest(
        model: Path, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jepa_eval.features.splits, "extract_features", CountingExtract(fail_on=2))
    stopped = run_main("jepa-eval", knn_args(model, folder, tmp_path))
    assert stopped.code == 130 and "Traceback" not in stopped.stderr
    assert result_files(tmp_path / "results") == [] and temp_leftovers(tmp_path) == []
    assert len(cache_folders(tmp_path / "cache")) == 1 and all_cache_entries_valid(tmp_path / "cache")

    counter = CountingExtract()
    monkeypatch.setattr(jepa_eval.features.splits, "extract_features", counter)
    rerun = run_main("jepa-eval", knn_args(model, folder, tmp_path))
    assert rerun.code == 0 and counter.calls == 1
    assert "train (avgpool): 6 x 64 (reused from the feature cache)" in rerun.message
    assert len(result_files(tmp_path / "results")) == 1


def test_a_protocol_interrupted_midway_writes_no_result_and_the_rerun_reuses_both_splits(
        model: Path, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jepa_eval.protocols.knn, "knn_evaluate", interrupt_self)
    assert run_main("jepa-eval", knn_args(model, folder, tmp_path)).code == 130
    assert result_files(tmp_path / "results") == [] and temp_leftovers(tmp_path) == []
    monkeypatch.undo()
    rerun = run_main("jepa-eval", knn_args(model, folder, tmp_path))
    assert rerun.code == 0 and rerun.message.count("(reused from the feature cache)") == 2
    assert "(extracted)" not in rerun.message and len(result_files(tmp_path / "results")) == 1


def test_a_result_write_torn_midway_leaves_no_result_file_and_no_temporary(
        model: Path, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def torn_write(path: Path, obj: object) -> Path:
        with atomic_path(path) as tmp:
            text = json.dumps(obj, default=str)
            tmp.write_text(text[: len(text) // 2])
            raise KeyboardInterrupt

    monkeypatch.setattr(jepa_eval.results.record, "atomic_write_json", torn_write)
    assert run_main("jepa-eval", knn_args(model, folder, tmp_path)).code == 130
    assert list((tmp_path / "results").iterdir()) == []


def test_half_written_result_files_left_by_a_kill_are_never_read_as_results(tmp_path: Path) -> None:
    write_bytes(tmp_path / ".20260101T000000-knn-abc123.json.tmp-99-deadbeef", b'{"protocol": "knn", "sch')
    write_bytes(tmp_path / "20260101T000000-knn-abc123.json", b'{"protocol": "knn", "schema": 1, "met')
    assert load_records(tmp_path) == []


def test_a_cache_write_interrupted_before_its_manifest_leaves_no_entry(
        model: Path, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_manifest(path: Path, obj: object) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(jepa_eval.features.cache, "atomic_write_json", no_manifest)
    assert run_main("jepa-eval", knn_args(model, folder, tmp_path)).code == 130
    assert cache_folders(tmp_path / "cache") == [] and temp_leftovers(tmp_path) == []


def _truncate_features(entry: Path) -> None:
    data = (entry / "features.npy").read_bytes()
    (entry / "features.npy").write_bytes(data[: len(data) // 2])


def _flip_a_byte_of_labels(entry: Path) -> None:
    data = bytearray((entry / "labels.npy").read_bytes())
    data[-1] ^= 1
    (entry / "labels.npy").write_bytes(bytes(data))


def _remove_manifest(entry: Path) -> None:
    (entry / "manifest.json").unlink()


def _tear_manifest(entry: Path) -> None:
    text = (entry / "manifest.json").read_text()
    (entry / "manifest.json").write_text(text[: len(text) // 2])


@pytest.mark.parametrize("damage", [_truncate_features, _flip_a_byte_of_labels, _remove_manifest, _tear_manifest],
                         ids=["features-truncated", "labels-bit-flipped", "manifest-missing", "manifest-torn"])
def test_a_damaged_cache_entry_is_a_miss_and_is_recomputed(
        damage: object, model: Path, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_main("jepa-eval", knn_args(model, folder, tmp_path)).code == 0
    entries = cache_folders(tmp_path / "cache")
    assert len(entries) == 2
    damage(entries[0])  # type: ignore[operator]
    (tmp_path / "cache" / ".tmp-0123456789abcdef-99-deadbeef").mkdir()  # a writer killed mid-put
    write_bytes(tmp_path / "cache" / ".tmp-0123456789abcdef-99-deadbeef" / "features.npy", b"\x93NUMPY")
    counter = CountingExtract()
    monkeypatch.setattr(jepa_eval.features.splits, "extract_features", counter)
    assert run_main("jepa-eval", knn_args(model, folder, tmp_path)).code == 0
    assert counter.calls == 1
    assert [e.name for e in cache_folders(tmp_path / "cache") if ".tmp-" not in e.name] == [e.name for e in entries]
    assert all(jepa_eval.features.cache.FeatureCache(tmp_path / "cache").get(e.name) is not None for e in entries)
    records = load_records(tmp_path / "results")
    assert len(records) == 2 and records[0].metrics == records[1].metrics


@pytest.mark.slow
def test_extraction_killed_with_sigkill_leaves_only_complete_cache_entries(model: Path, tmp_path: Path) -> None:
    with_progress = [a for a in knn_args(model, "digits", tmp_path, "--batch-size", "8") if a != "--quiet"]
    child = Child("jepa-eval", with_progress, tmp_path / "logs")
    # the progress bar of the evaluation split: the kill lands inside its extraction
    assert wait_until(lambda: child.stderr_has("digits/test:"), timeout=240, child=child)
    child.process.send_signal(signal.SIGKILL)
    assert child.wait().code == -signal.SIGKILL
    assert result_files(tmp_path / "results") == []
    assert len([f for f in cache_folders(tmp_path / "cache") if ".tmp-" not in f.name]) == 1
    counter = CountingExtract()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jepa_eval.features.splits, "extract_features", counter)
        assert run_main("jepa-eval", knn_args(model, "digits", tmp_path)).code == 0
    assert counter.calls == 1


# ---------------------------------------------------------------------------- signals


def _signal_when(child: Child, ready: str, sig: signal.Signals) -> str:
    assert wait_until(lambda: child.stderr_has(ready), timeout=240, child=child), child.err_path.read_text()
    child.process.send_signal(sig)
    return child.wait().stderr


SIGNALS = [
    pytest.param(signal.SIGINT, 130, id="SIGINT"),
    pytest.param(signal.SIGTERM, 143, id="SIGTERM"),
]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", SIGNALS)
def test_an_interrupted_knn_stops_cleanly_and_says_what_was_kept(
        sig: signal.Signals, code: int, model: Path, tmp_path: Path) -> None:
    child = Child("jepa-eval", knn_args(model, "digits", tmp_path, "--batch-size", "8"), tmp_path / "logs")
    stderr = _signal_when(child, "model: ", sig)
    assert child.process.returncode == code and "Traceback" not in stderr and "interrupted" in stderr
    assert result_files(tmp_path / "results") == [] and all_cache_entries_valid(tmp_path / "cache")
    assert temp_leftovers(tmp_path / "cache", tmp_path / "results") == []


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", SIGNALS)
def test_an_interrupted_training_stops_cleanly_and_says_what_was_kept(
        sig: signal.Signals, code: int, training: dict[str, object], tmp_path: Path) -> None:
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(trainer_config(training["images"], tmp_path / "run", epochs=50)))
    child = Child("ijepa", ["train", "--config", str(config_path)], tmp_path / "logs")
    stderr = _signal_when(child, "epoch 1: loss", sig)  # after the first checkpoint
    assert child.process.returncode == code and "Traceback" not in stderr and "interrupted" in stderr
    load_checkpoint(tmp_path / "run" / "jepa-latest.pth.tar")


# ---------------------------------------------------------------------------- concurrent suites


SUITE = {"suite": "race", "protocols": [{"protocol": "knn", "dataset": None, "params": {"ks": [1, 2]}},
                                        {"protocol": "lowshot", "dataset": None, "params": {"shots": [1], "seeds": 1}}]}


def _race_suite(tmp_path: Path, data: str) -> Path:
    suite = json.loads(json.dumps(SUITE))
    for entry in suite["protocols"]:
        entry["dataset"] = data
    path = tmp_path / "race.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def _count_per_result(results: Path) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for record in load_records(results):
        key = (record.model.sha256, record.params["suite_entry"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_two_suites_at_once_lose_no_result_and_corrupt_no_cache_entry(model: Path, folder: str, tmp_path: Path) -> None:
    suite = load_suite(_race_suite(tmp_path, folder))
    options = ExtractOptions(cache_dir=str(tmp_path / "cache"), progress=False)
    outcomes, errors = [], []

    def run() -> None:
        try:
            outcomes.append(run_suite(suite, [ModelSpec(str(model), name="m")], options, tmp_path / "results",
                                      log=lambda line: None))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == [] and all(o.failed == [] for o in outcomes)
    counts = _count_per_result(tmp_path / "results")
    assert len(counts) == 2 and all(1 <= n <= 2 for n in counts.values())  # none lost; at most one duplicate
    assert sum(len(o.written) for o in outcomes) == sum(counts.values())
    assert all_cache_entries_valid(tmp_path / "cache") and temp_leftovers(tmp_path / "cache") == []


@pytest.mark.slow
def test_two_suite_processes_at_once_lose_no_result_and_corrupt_no_cache_entry(model: Path, tmp_path: Path) -> None:
    suite = _race_suite(tmp_path, "digits")
    args = ["suite", str(suite), "--ckpt", f"m={model}", "--results-dir", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    children = [Child("jepa-eval", args, tmp_path / f"logs{i}") for i in range(2)]
    assert [c.wait().code for c in children] == [0, 0]
    counts = _count_per_result(tmp_path / "results")
    assert len(counts) == 2 and all(1 <= n <= 2 for n in counts.values())
    assert all_cache_entries_valid(tmp_path / "cache") and temp_leftovers(tmp_path / "cache") == []


# ---------------------------------------------------------------------------- safety


def _crafted(tmp_path: Path) -> Path:
    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model": Payload()}, tmp_path / "crafted.pth")
    return tmp_path / "crafted.pth"


def test_only_trust_checkpoint_unpickles_code_and_it_warns_first(model: Path, folder: str, tmp_path: Path) -> None:
    crafted = _crafted(tmp_path)
    refused = run_main("jepa-eval", knn_args(crafted, folder, tmp_path))
    assert refused.code == 2 and "--trust-checkpoint" in refused.message and not (tmp_path / "pwned").exists()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trusted = run_main("jepa-eval", knn_args(crafted, folder, tmp_path, "--trust-checkpoint"))
    assert (tmp_path / "pwned").exists()  # the payload ran: only this flag gets there
    assert any("weights_only=False" in str(w.message) for w in caught)
    assert trusted.code == 2  # and the result is still not a backbone


def test_evaluation_and_suites_never_open_a_network_connection(
        model: Path, folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    assert run_main("jepa-eval", knn_args(model, folder, tmp_path)).code == 0
    suite = _race_suite(tmp_path, folder)
    outcome = run_main("jepa-eval", ["suite", str(suite), "--ckpt", f"m={model}", "--results-dir",
                                     str(tmp_path / "suite"), "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert outcome.code == 0, outcome.stderr


def _tar_with(path: Path, name: str, *, symlink_to: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        if symlink_to is not None:
            info.type, info.linkname = tarfile.SYMTYPE, symlink_to
            tar.addfile(info)
        else:
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return path


@pytest.mark.parametrize("name, link", [("../escaped.txt", None), ("/tmp/escaped-abs.txt", None),
                                        ("cifar10/link", "/etc/passwd")],
                         ids=["dot-dot", "absolute", "symlink"])
def test_an_archive_member_outside_its_folder_is_refused_and_nothing_is_written(
        name: str, link: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts.shared_data import SHARED_ENV, extract_shared_archive

    shared = tmp_path / "shared"
    shared.mkdir()
    _tar_with(shared / "evil.tar.gz", name, symlink_to=link)
    monkeypatch.setenv(SHARED_ENV, str(shared))
    with pytest.raises(JepaEvalError, match="unsafe member"):
        extract_shared_archive("evil", tmp_path / "extract" / "deep")
    assert not (tmp_path / "extract" / "escaped.txt").exists() and not Path("/tmp/escaped-abs.txt").exists()
    assert [p for p in (tmp_path / "extract").rglob("*") if p.is_file() or p.is_symlink()] == []
