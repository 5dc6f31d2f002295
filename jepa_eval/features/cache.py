"""Content-keyed on-disk feature cache.

An entry's key is the sha256 of a canonical JSON of everything the features depend on
(:data:`REQUIRED_PARTS`, built by :func:`cache_parts`, plus the feature-code version).
Each entry is one folder named by its key, holding ``features.npy``, ``labels.npy`` and
``manifest.json``: pooled features float32 [N, D'], or patch tokens float16 [N, T, D'] read
back as a memory map (:meth:`FeatureCache.get_arrays`). A writer fills a temporary folder
(arrays first, the manifest last, each atomically) and renames the whole folder into place, so a
reader sees a complete entry or none. An entry is valid only when its manifest records the arrays' byte sizes, sha256
digests, shapes and dtypes and they match; anything else is a miss, and the folder is removed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jepa_eval.core.atomic import TMP_MARKER, atomic_write_json
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.hashing import file_sha256
from jepa_eval.features.extract import FEATURE_CODE_VERSION
from jepa_eval.features.featureset import FeatureSet, save_array

LAYOUT_VERSION = 1
REQUIRED_PARTS = ("checkpoint_sha256", "ckpt_key", "dataset", "root", "split", "transform",
                  "image_size", "mode", "dtype")
_ARRAYS = ("features", "labels")
_KEY_RE = re.compile(r"[0-9a-f]{64}")
log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """``$JEPA_EVAL_CACHE`` if set, else ``~/.cache/jepa-eval/features``."""
    env = os.environ.get("JEPA_EVAL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jepa-eval" / "features"


def cache_parts(*, checkpoint_sha256: str, ckpt_key: str | None, dataset: str,
                root: str | Path, split: str, transform: str, image_size: int, mode: str,
                dtype: str, **extra: Any) -> dict[str, Any]:
    """The key parts of one feature extraction, with the data ``root`` resolved to an absolute path.

    ``transform`` describes the eval transform in full (resize, crop, interpolation, mean,
    std); ``dtype`` is the compute dtype (``features.compute_dtype``). ``extra`` adds parts
    such as a sample limit.
    """
    return {"checkpoint_sha256": checkpoint_sha256, "ckpt_key": ckpt_key, "dataset": dataset,
            "root": str(Path(root).expanduser().resolve()), "split": split,
            "transform": transform, "image_size": int(image_size), "mode": mode, "dtype": dtype,
            **extra}


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON (sorted keys, no spaces) of ``parts``.

    The feature-code version (``features.FEATURE_CODE_VERSION``) is always hashed in, so
    features computed by an older ``embed`` never match.
    """
    missing = [name for name in REQUIRED_PARTS if name not in parts]
    if missing:
        raise JepaEvalError("feature cache key parts are incomplete",
                            expected="the parts " + ", ".join(REQUIRED_PARTS),
                            found="no " + ", ".join(missing), hint="build them with cache_parts()")
    try:
        text = json.dumps({**parts, "feature_code_version": FEATURE_CODE_VERSION}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JepaEvalError("feature cache key parts must be plain JSON values",
                            expected="strings, numbers, booleans, None, lists and dicts",
                            found=str(exc)) from exc
    return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass
class CacheEntry:
    """One valid cache entry as listed by :meth:`FeatureCache.entries`; ``bytes`` on disk."""

    key: str
    parts: dict[str, Any]
    rows: int
    dim: int
    bytes: int
    created: str
    path: Path


class FeatureCache:
    """Feature sets on disk under ``root``, one folder per key (see the module docstring)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_root()

    def get(self, key: str) -> FeatureSet | None:
        """The cached features of ``key``, or None (a missing or invalid entry, then removed)."""
        found = self.get_arrays(key)
        return None if found is None else FeatureSet(*found)

    def get_arrays(self, key: str, *, mmap: bool = False,
                   verify_digests: bool = True) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
        """(features, labels, meta) of ``key`` as stored (``mmap``: features memory-mapped
        read-only), or None for a missing or invalid entry (then removed). ``verify_digests``
        False trusts the digests, e.g. when another process has just checked them."""
        folder = self._folder(key)
        if not folder.is_dir():
            return None
        manifest = _read_manifest(folder, key, verify_digests=verify_digests)
        if manifest is None:
            log.warning("removing invalid feature cache entry %s", folder)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False,
                                mmap_mode="r" if mmap and name == "features" else None) for name in _ARRAYS}
        for name, array in arrays.items():
            record = manifest["files"][name]
            if list(array.shape) != record["shape"] or str(array.dtype) != record["dtype"]:
                log.warning("removing feature cache entry %s: %s.npy has the wrong shape", folder, name)
                del arrays
                shutil.rmtree(folder, ignore_errors=True)
                return None
        return arrays["features"], arrays["labels"], manifest["meta"]

    def put(self, key: str, featureset: FeatureSet, parts: dict[str, Any]) -> Path:
        """Store ``featureset`` under ``key`` and return the entry folder.

        If another writer stored a valid entry under the same key first, theirs is kept.
        """
        def write(folder: Path) -> dict[str, Any]:
            save_array(folder / "features.npy", featureset.features)
            save_array(folder / "labels.npy", featureset.labels)
            return featureset.meta

        return self.write_entry(key, parts, write)

    def write_entry(self, key: str, parts: dict[str, Any], write: Callable[[Path], dict[str, Any]]) -> Path:
        """Store the entry that ``write(folder)`` fills (``features.npy`` and ``labels.npy``; it
        returns the meta) under ``key``, and return the entry folder.

        ``write`` fills a temporary folder; the manifest (sizes, digests, shapes, dtypes read back
        from the files) is written last and the folder renamed into place, so a failed or
        interrupted ``write`` leaves nothing. A valid entry another writer stored first is kept.
        """
        if cache_key(parts) != key:
            raise JepaEvalError("the feature cache key does not match its parts",
                                expected=f"cache_key(parts) == {key}", found=cache_key(parts))
        final = self._folder(key)
        tmp = self.root / f"{TMP_MARKER}{key[:16]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            meta = write(tmp)
            files = {name: _describe(tmp / f"{name}.npy") for name in _ARRAYS}
            atomic_write_json(tmp / "manifest.json", {
                "layout": LAYOUT_VERSION, "key": key, "parts": parts, "files": files,
                "rows": files["features"]["shape"][0], "dim": files["features"]["shape"][-1], "meta": meta,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
            self._move_into_place(tmp, final, key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def entries(self) -> list[CacheEntry]:
        """Valid entries (by manifest and file sizes; digests are checked on :meth:`get`)."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in sorted(self.root.iterdir()):
            if not (folder.is_dir() and _KEY_RE.fullmatch(folder.name)):
                continue
            manifest = _read_manifest(folder, folder.name, verify_digests=False)
            if manifest is not None:
                size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
                found.append(CacheEntry(folder.name, manifest["parts"], manifest["rows"],
                                        manifest["dim"], size, manifest["created"], folder))
        return found

    def remove(self, key: str) -> bool:
        """Delete the entry of ``key``; True if there was one."""
        folder = self._folder(key)
        if not folder.is_dir():
            return False
        shutil.rmtree(folder)
        return True

    def clear(self, match: dict[str, Any] | None = None) -> int:
        """Delete the entries whose parts contain every item of ``match`` (all if None).

        Clearing everything also deletes invalid entries and temporaries of interrupted
        writes. Returns the number of valid entries deleted.
        """
        removed = sum(self.remove(entry.key) for entry in self.entries()
                      if match is None or all(entry.parts.get(k) == v for k, v in match.items()))
        if match is None and self.root.is_dir():
            for leftover in self.root.iterdir():
                if leftover.is_dir() and (_KEY_RE.fullmatch(leftover.name) or TMP_MARKER in leftover.name):
                    shutil.rmtree(leftover, ignore_errors=True)
        return removed

    def _folder(self, key: str) -> Path:
        if not _KEY_RE.fullmatch(key):
            raise JepaEvalError("not a feature cache key", expected="64 lowercase hex digits",
                                found=repr(key))
        return self.root / key

    def _move_into_place(self, tmp: Path, final: Path, key: str) -> None:
        """Rename ``tmp`` to ``final``; keep a valid entry already there, replace an invalid one."""
        try:
            os.rename(tmp, final)
            return
        except OSError:
            if _read_manifest(final, key, verify_digests=True) is not None:
                return
        shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if _read_manifest(final, key, verify_digests=True) is None:
                raise


def cached_extract(cache: FeatureCache | None, parts: dict[str, Any],
                   compute: Callable[[], FeatureSet]) -> tuple[FeatureSet, bool]:
    """(features, was_cache_hit): the cached features of ``parts``, else ``compute()`` stored.

    With ``cache`` None it always computes. A failed cache write only warns: the computed
    features are returned all the same. A distributed rank's own shard
    (``meta['gathered']`` False) is returned but never stored.
    """
    if cache is None:
        return compute(), False
    key = cache_key(parts)
    hit = cache.get(key)
    if hit is not None:
        return hit, True
    featureset = compute()
    if featureset.meta.get("gathered") is False:
        return featureset, False
    try:
        cache.put(key, featureset, parts)
    except OSError as exc:
        warnings.warn(f"could not store features in the cache at {cache.root}: {exc}", stacklevel=2)
    return featureset, False


def _describe(path: Path) -> dict[str, Any]:
    """The manifest record of one ``.npy`` file: its bytes, sha256, shape and dtype."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path), "shape": list(array.shape),
            "dtype": str(array.dtype)}


def _read_manifest(folder: Path, key: str, *, verify_digests: bool) -> dict[str, Any] | None:
    """The entry's manifest if it is complete and its arrays match it, else None."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest["layout"] != LAYOUT_VERSION or manifest["key"] != key:
            return None
        for name in _ARRAYS:
            record = manifest["files"][name]
            path = folder / f"{name}.npy"
            if path.stat().st_size != record["bytes"]:
                return None
            if verify_digests and file_sha256(path) != record["sha256"]:
                return None
        return manifest
    except (OSError, ValueError, KeyError, TypeError):
        return None


