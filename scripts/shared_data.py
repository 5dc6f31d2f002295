"""The real-photo archives of ``../shared/data``, extracted once into a cache for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from pathlib import Path, PurePosixPath

from jepa_eval.core.atomic import TMP_MARKER
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.hashing import file_sha256

SHARED_ENV = "JEPA_EVAL_SHARED"
REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$JEPA_EVAL_SHARED`` when set, else ``../shared/data`` beside the repository root."""
    env = os.environ.get(SHARED_ENV)
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"


def _check_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Refuse absolute names, ``..`` components, links and device files before extracting."""
    for member in members:
        parts = PurePosixPath(member.name).parts
        if member.name.startswith("/") or ".." in parts or not (member.isfile() or member.isdir()):
            raise JepaEvalError(f"archive {archive} has an unsafe member {member.name!r}",
                                expected="plain files and folders inside the extraction folder",
                                found=f"{member.name!r} ({'link' if member.issym() or member.islnk() else 'path'})")


def extract_shared_archive(name: str, cache_dir: Path) -> Path | None:
    """Extract ``<shared data>/<name>.tar.gz`` once and return its root folder, or None if absent.

    The archive goes to ``cache_dir/<name>-<first 12 hex of its sha256>/`` (extracted to a
    temporary folder, then renamed, so a half-extracted tree is never used); a later call with the
    same archive reuses it. The returned root is the archive's single top-level folder (e.g.
    ``.../cifar10``), or the extraction folder when the archive has several.
    """
    archive = shared_data_dir() / f"{name}.tar.gz"
    if not archive.is_file():
        return None
    target = Path(cache_dir) / f"{name}-{file_sha256(archive)[:12]}"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}{TMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            staging.mkdir()
            with tarfile.open(archive, "r:gz") as tar:
                members = tar.getmembers()
                _check_members(archive, members)
                tar.extractall(staging, members=members, filter="data")
            try:
                os.rename(staging, target)
            except OSError:
                if not target.is_dir():  # another process did not win the race: a real failure
                    raise
        except (tarfile.TarError, EOFError) as exc:
            raise JepaEvalError(f"cannot extract {archive}", expected="a gzipped tar archive",
                                found=f"{type(exc).__name__}: {exc}") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    tops = [p for p in target.iterdir() if not p.name.startswith(".")]
    return tops[0] if len(tops) == 1 and tops[0].is_dir() else target
