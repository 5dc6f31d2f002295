"""The content-keyed feature cache: keys, hits and misses, crash safety, listing and clearing."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from jepa_eval.core.atomic import TMP_MARKER
from jepa_eval.features.cache import (REQUIRED_PARTS, FeatureCache, cache_key, cache_parts, cached_extract,
                             default_cache_root)
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.features.extract import FEATURE_CODE_VERSION
from jepa_eval.features.featureset import FeatureSet


def _parts(tmp_path: Path, **changes) -> dict:
    base = dict(checkpoint_sha256="ab" * 32, ckpt_key="target_encoder", dataset="cifar10",
                root=tmp_path, split="train", transform="resize 32 bicubic; imagenet mean/std",
                image_size=32, mode="avgpool", dtype="float32")
    return cache_parts(**{**base, **changes})


def _features(rows: int = 5, dim: int = 4, offset: float = 0.0) -> FeatureSet:
    values = np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) + offset
    return FeatureSet(values, np.arange(rows) % 3, {"mode": "avgpool"})


@pytest.fixture
def cache(tmp_path: Path) -> FeatureCache:
    return FeatureCache(tmp_path / "cache")


def test_key_is_the_sha256_of_canonical_json_independent_of_part_order(tmp_path):
    parts = _parts(tmp_path)
    reordered = dict(reversed(list(parts.items())))
    assert cache_key(parts) == cache_key(reordered)
    assert len(cache_key(parts)) == 64 and int(cache_key(parts), 16) >= 0


@pytest.mark.parametrize("name, value", [
    ("checkpoint_sha256", "cd" * 32), ("ckpt_key", "encoder"), ("dataset", "cifar100"),
    ("split", "test"), ("transform", "resize 36 bilinear; crop 32"), ("image_size", 64),
    ("mode", "avgpool4"), ("dtype", "bfloat16")])
def test_key_changes_with_every_part(tmp_path, name, value):
    assert cache_key(_parts(tmp_path, **{name: value})) != cache_key(_parts(tmp_path))


def test_key_changes_with_data_root_and_feature_code_version(tmp_path, monkeypatch):
    before = cache_key(_parts(tmp_path))
    assert cache_key(_parts(tmp_path, root=tmp_path / "elsewhere")) != before
    monkeypatch.setattr("jepa_eval.features.cache.FEATURE_CODE_VERSION", FEATURE_CODE_VERSION + "-next")
    assert cache_key(_parts(tmp_path)) != before


def test_data_root_is_resolved_so_equivalent_paths_share_a_key(tmp_path):
    (tmp_path / "data").mkdir()
    assert cache_key(_parts(tmp_path, root=tmp_path / "data" / "..")) == cache_key(_parts(tmp_path))


def test_incomplete_or_non_json_parts_are_refused(tmp_path):
    parts = _parts(tmp_path)
    del parts["transform"]
    with pytest.raises(JepaEvalError, match="no transform"):
        cache_key(parts)
    with pytest.raises(JepaEvalError, match="plain JSON"):
        cache_key({**_parts(tmp_path), "extra": object()})
    assert set(REQUIRED_PARTS) <= set(_parts(tmp_path))


def test_default_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JEPA_EVAL_CACHE", str(tmp_path / "x"))
    assert default_cache_root() == tmp_path / "x" and FeatureCache().root == tmp_path / "x"
    monkeypatch.delenv("JEPA_EVAL_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "jepa-eval" / "features"


def test_put_then_get_returns_the_same_arrays_and_meta(cache, tmp_path):
    parts = _parts(tmp_path)
    key = cache_key(parts)
    assert cache.get(key) is None
    folder = cache.put(key, _features(), parts)
    assert sorted(p.name for p in folder.iterdir()) == ["features.npy", "labels.npy", "manifest.json"]
    hit = cache.get(key)
    np.testing.assert_array_equal(hit.features, _features().features)
    np.testing.assert_array_equal(hit.labels, _features().labels)
    assert hit.labels.dtype == np.int64 and hit.meta == {"mode": "avgpool"}


def test_put_refuses_a_key_that_does_not_match_its_parts(cache, tmp_path):
    with pytest.raises(JepaEvalError, match="does not match"):
        cache.put(cache_key(_parts(tmp_path, split="test")), _features(), _parts(tmp_path))


def test_cached_extract_computes_once_then_hits(cache, tmp_path):
    calls = []

    def compute() -> FeatureSet:
        calls.append(1)
        return _features()

    first, hit1 = cached_extract(cache, _parts(tmp_path), compute)
    second, hit2 = cached_extract(cache, _parts(tmp_path), compute)
    other, hit3 = cached_extract(cache, _parts(tmp_path, mode="cls"), compute)
    assert (hit1, hit2, hit3) == (False, True, False) and len(calls) == 2
    np.testing.assert_array_equal(first.features, second.features)


def test_cached_extract_without_a_cache_always_computes(tmp_path):
    assert cached_extract(None, _parts(tmp_path), _features)[1] is False


def test_a_failed_cache_write_warns_and_still_returns_the_features(tmp_path):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="could not store"):
        result, hit = cached_extract(FeatureCache(blocker), _parts(tmp_path), _features)
    assert not hit and len(result) == 5


def test_a_distributed_ranks_shard_is_returned_but_never_stored(cache, tmp_path):
    shard = FeatureSet(np.ones((2, 4), np.float32), np.zeros(2), {"gathered": False, "indices": [1, 3]})
    result, hit = cached_extract(cache, _parts(tmp_path), lambda: shard)
    assert result is shard and not hit and cache.entries() == []


def _stored(cache: FeatureCache, tmp_path: Path) -> tuple[str, Path]:
    parts = _parts(tmp_path)
    key = cache_key(parts)
    return key, cache.put(key, _features(), parts)


def test_arrays_without_a_manifest_are_a_miss_and_are_cleaned(cache, tmp_path):
    key, folder = _stored(cache, tmp_path)
    (folder / "manifest.json").unlink()  # as if killed between the arrays and the manifest
    assert cache.get(key) is None and not folder.exists()
    assert cache.entries() == []


def test_a_truncated_manifest_is_a_miss(cache, tmp_path):
    key, folder = _stored(cache, tmp_path)
    manifest = folder / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    assert cache.entries() == [] and cache.get(key) is None


def test_an_array_changed_after_the_manifest_is_a_miss(cache, tmp_path):
    key, folder = _stored(cache, tmp_path)
    np.save(folder / "features.npy", _features(offset=1.0).features)  # same size, other bytes
    assert cache.get(key) is None and not folder.exists()


def test_an_array_of_the_wrong_size_is_not_listed(cache, tmp_path):
    key, folder = _stored(cache, tmp_path)
    np.save(folder / "labels.npy", np.zeros(2, np.int64))
    assert cache.entries() == [] and cache.get(key) is None


def test_a_leftover_temporary_folder_is_never_read_and_clear_removes_it(cache, tmp_path):
    parts = _parts(tmp_path)
    key = cache_key(parts)
    leftover = cache.root / f"{TMP_MARKER}{key[:16]}-99999-deadbeef"
    leftover.mkdir(parents=True)
    np.save(leftover / "features.npy", _features().features)
    assert cache.get(key) is None and cache.entries() == []
    assert cache.clear() == 0 and not leftover.exists()


def test_a_second_writer_of_the_same_key_keeps_the_first_valid_entry(cache, tmp_path):
    parts = _parts(tmp_path)
    key = cache_key(parts)
    cache.put(key, _features(offset=0.0), parts)
    cache.put(key, _features(offset=100.0), parts)
    np.testing.assert_array_equal(cache.get(key).features, _features(offset=0.0).features)
    assert [p.name for p in cache.root.iterdir()] == [key]


def test_an_invalid_entry_is_replaced_by_the_next_put(cache, tmp_path):
    key, folder = _stored(cache, tmp_path)
    (folder / "manifest.json").write_text("{}")
    cache.put(key, _features(offset=7.0), _parts(tmp_path))
    np.testing.assert_array_equal(cache.get(key).features, _features(offset=7.0).features)


def test_concurrent_writers_of_one_key_leave_one_valid_entry(cache, tmp_path):
    parts = _parts(tmp_path)
    key = cache_key(parts)
    threads = [threading.Thread(target=cache.put, args=(key, _features(rows=200, offset=i), parts))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = cache.get(key)
    assert got is not None and len(got) == 200
    assert [p.name for p in cache.root.iterdir()] == [key]


def test_entries_describe_each_entry_and_clear_by_match_removes_only_matches(cache, tmp_path):
    for mode in ("avgpool", "cls"):
        for split in ("train", "test"):
            parts = _parts(tmp_path, mode=mode, split=split)
            cache.put(cache_key(parts), _features(rows=3, dim=2), parts)
    listed = cache.entries()
    assert len(listed) == 4
    entry = listed[0]
    assert (entry.rows, entry.dim) == (3, 2) and entry.bytes == sum(
        p.stat().st_size for p in entry.path.iterdir())
    assert entry.created and entry.parts["dataset"] == "cifar10"
    assert cache.clear({"mode": "cls", "split": "test"}) == 1
    assert cache.clear({"mode": "cls"}) == 1
    assert sorted(e.parts["split"] for e in cache.entries()) == ["test", "train"]
    assert cache.clear() == 2 and cache.entries() == []


def test_remove_deletes_one_entry_and_bad_keys_are_refused(cache, tmp_path):
    key, folder = _stored(cache, tmp_path)
    assert cache.remove(key) and not folder.exists() and not cache.remove(key)
    with pytest.raises(JepaEvalError, match="64 lowercase hex"):
        cache.get("../../etc")


def test_manifest_records_parts_sizes_and_digests(cache, tmp_path):
    key, folder = _stored(cache, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["key"] == key and manifest["parts"] == _parts(tmp_path)
    assert manifest["files"]["features"]["bytes"] == os.path.getsize(folder / "features.npy")
    assert manifest["files"]["features"]["shape"] == [5, 4]
    assert len(manifest["files"]["labels"]["sha256"]) == 64
