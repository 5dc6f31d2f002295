"""The checkpoints of a training folder as they land, each complete state exactly once.

Trainers write ``{tag}-ep{N}.pth.tar`` once and rewrite ``{tag}-latest.pth.tar`` every epoch;
the official I-JEPA trainer does both with a plain ``torch.save``, not atomically, so a reader
can catch a file half-written. :class:`CheckpointWatcher` polls the folder and hands out a state
of a file only when it is complete:

- its size, mtime and inode have not changed for ``settle_s`` seconds (or it is older than that);
- it is hashed, and its size, mtime and inode are the same after as before, so the hash is
  that of one state of the file, not of a mix of two; a ``latest`` file, which the trainer
  will rewrite, is copied to a private snapshot on the way and the snapshot is what is
  evaluated (an ``ep`` file is never rewritten, so it is evaluated where it is);
- it loads with ``torch.load`` and holds an ``epoch`` field.

A state that fails is retried at every poll until ``timeout_s`` passes; then it is given up
(said once) until the file changes again. A state is identified by its content hash and its
``epoch``: a hash seen before, or an epoch already handed out, is never handed out again (the
official ``ep50`` file and the ``latest`` file of the same epoch differ in bytes, since
``torch.save`` names the archive inside after the file, but hold one epoch).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jepa_eval.core.atomic import TMP_MARKER
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.core.hashing import CHUNK_BYTES

CHECKPOINT_PATTERN = re.compile(r"-(ep\d+|latest)\.pth(\.tar)?$")
Log = Callable[[str], Any]
Signature = tuple[int, int, int]


@dataclass(frozen=True)
class CheckpointState:
    """One complete state of a checkpoint file: its ``epoch`` field (completed epochs), the
    file's ``name`` and ``source`` path, the ``sha256`` of its bytes, the file to evaluate
    (``snapshot``: a private copy of a ``latest`` file, deleted by
    :meth:`CheckpointWatcher.release`, else ``source`` itself), and the scalar ``fields`` of the
    file (``loss``, ``itr``...). ``alias``: an ``ep`` file of an epoch already measured from a
    ``latest`` state, i.e. the permanent name of what was measured: nothing to evaluate."""

    epoch: int
    name: str
    source: Path
    sha256: str
    snapshot: Path
    fields: dict[str, float]
    alias: bool = False


@dataclass
class _File:
    """What the watcher knows of one file: its signature at the last poll and since when
    (watcher clock), when its current trouble began, and the last signature it dealt with."""

    signature: Signature | None = None
    since: float = 0.0
    failing_since: float | None = None
    said: bool = False
    done: Signature | None = None


@dataclass
class CheckpointWatcher:
    """Polls ``run_dir`` for complete checkpoint states (see the module docstring).

    ``snapshot_dir`` receives the copies; ``clock`` (seconds, monotonic) is injectable for
    tests. With ``patient=False`` (a one-off scan) nothing waits: a file that is not complete
    now is a :class:`JepaEvalError`.
    """

    run_dir: Path
    snapshot_dir: Path
    settle_s: float = 2.0
    timeout_s: float = 600.0
    patient: bool = True
    log: Log | None = None
    clock: Callable[[], float] = time.monotonic
    seen_hashes: set[str] = field(default_factory=set)
    seen_epochs: dict[int, str] = field(default_factory=dict)
    files: dict[str, _File] = field(default_factory=dict)
    missing_said: bool = False

    def remember(self, epoch: int, name: str, sha256: str | None) -> None:
        """Mark a state as handled: epoch ``epoch`` measured from the file ``name`` (e.g. by an
        earlier run of the monitor)."""
        self.seen_epochs.setdefault(epoch, name)
        if sha256:
            self.seen_hashes.add(sha256)

    def poll(self) -> list[CheckpointState]:
        """New complete states found now, by epoch; each is marked handled. A patient watcher
        waits for a training folder that does not exist yet."""
        if not self.run_dir.is_dir():
            if self.patient:
                if not self.missing_said:
                    self.missing_said = True
                    self._say(f"waiting for the training folder {self.run_dir} to appear")
                return []
            raise JepaEvalError(f"training folder {self.run_dir} does not exist",
                                expected="a folder with *-ep{N}.pth.tar / *-latest.pth.tar checkpoints")
        found: list[CheckpointState] = []
        for path in sorted(self.run_dir.iterdir()):
            if CHECKPOINT_PATTERN.search(path.name) and TMP_MARKER not in path.name:
                state = self._check(path)
                if state is not None:
                    found.append(state)
        return sorted(found, key=lambda s: (s.epoch, "latest" in s.name))

    def release(self, state: CheckpointState) -> None:
        """Delete the snapshot of a state once it has been evaluated."""
        if state.snapshot != state.source:
            state.snapshot.unlink(missing_ok=True)

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(message)

    def _check(self, path: Path) -> CheckpointState | None:
        known = self.files.setdefault(path.name, _File())
        try:
            signature = _signature(path)
        except FileNotFoundError:
            self.files.pop(path.name, None)
            return None
        now = self.clock()
        if signature == known.done:
            return None
        if signature != known.signature:
            known.signature, known.since = signature, now
        settled = now - known.since >= self.settle_s or time.time_ns() - signature[1] >= self.settle_s * 1e9
        if self.patient and not settled:
            return self._trouble(path, known, now, "it kept changing", say=False)
        return self._read(path, known, signature, now)

    def _read(self, path: Path, known: _File, signature: Signature, now: float) -> CheckpointState | None:
        snapshot = (self.snapshot_dir / f".{path.name}{TMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}"
                    if "latest" in path.name else path)
        state = CheckpointState(0, path.name, path, "", snapshot, {})
        try:
            digest = _hashed(path, None if snapshot == path else snapshot)
            after = _signature(path)
        except FileNotFoundError:
            self.release(state)
            return None
        if after != signature:
            self.release(state)
            known.signature, known.since = after, now
            return self._trouble(path, known, now, "it changed while it was read")
        try:
            fields = _scalar_fields(snapshot)
        except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a file cut short
            self.release(state)
            if not self.patient:
                raise JepaEvalError(f"cannot read checkpoint {path}", expected="a torch checkpoint written by a trainer",
                                    found=f"{type(exc).__name__}: {exc}") from exc
            return self._trouble(path, known, now, f"torch.load fails ({type(exc).__name__})")
        known.done, known.failing_since, known.said = signature, None, False
        if "epoch" not in fields:
            self.release(state)
            if not self.patient:
                raise JepaEvalError(f"checkpoint {path} has no 'epoch' field", expected="an I-JEPA training checkpoint")
            self._say(f"skipped {path.name}: it has no 'epoch' field")
            return None
        epoch = int(fields["epoch"])
        new_content = digest not in self.seen_hashes
        self.seen_hashes.add(digest)
        earlier = self.seen_epochs.get(epoch)
        if earlier is None:
            self.seen_epochs[epoch] = path.name
            return CheckpointState(epoch, path.name, path, digest, snapshot, fields)
        self.release(state)
        if "latest" in earlier and "latest" not in path.name:
            self.seen_epochs[epoch] = path.name
            return CheckpointState(epoch, path.name, path, digest, path, fields, alias=True)
        if new_content and earlier == path.name:
            self._say(f"skipped a new state of {path.name}: its epoch {epoch} was already measured "
                      "(a restarted run? monitor it into a new result file)")
        return None  # content handled before, or the latest twin of a measured ep file

    def _trouble(self, path: Path, known: _File, now: float, why: str, say: bool = True) -> None:
        """Wait for an incomplete file (saying why the first time, when ``say``); give its
        current state up after ``timeout_s``."""
        if known.failing_since is None:
            known.failing_since = now
        if say and not known.said:
            known.said = True
            self._say(f"waiting for {path.name}: {why}")
        if now - known.failing_since >= self.timeout_s:
            self._say(f"gave up on this state of {path.name} after {self.timeout_s:g} s: {why}; "
                      "it is read again when it changes")
            known.done, known.failing_since, known.said = known.signature, None, False
        return None


def _signature(path: Path) -> Signature:
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, stat.st_ino


def _hashed(source: Path, copy: Path | None) -> str:
    """The sha256 of ``source``'s bytes, read in chunks (and written to ``copy`` on the way)."""
    digest = hashlib.sha256()
    with contextlib.ExitStack() as files:
        src = files.enter_context(open(source, "rb"))
        if copy is not None:
            copy.parent.mkdir(parents=True, exist_ok=True)
        dst = files.enter_context(open(copy, "wb")) if copy is not None else None
        while chunk := src.read(CHUNK_BYTES):
            digest.update(chunk)
            if dst is not None:
                dst.write(chunk)
    return digest.hexdigest()


def _scalar_fields(path: Path) -> dict[str, float]:
    """The number-valued top-level entries of a checkpoint (``epoch``, ``loss``, ``itr``...),
    read memory-mapped, so the tensors stay on disk."""
    with torch.serialization.safe_globals([argparse.Namespace]):  # the ``args`` of DINO and MAE files
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict):
        raise TypeError(f"the file holds a {type(state).__name__}, not a dict")
    return {k: float(v) for k, v in state.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
