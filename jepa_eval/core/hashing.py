"""Content digests: the sha256 of a file, read in chunks (checkpoints, cache arrays, archives)."""

from __future__ import annotations

import hashlib
import os

CHUNK_BYTES = 1 << 22


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
