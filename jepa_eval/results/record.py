"""Self-describing result files: one JSON record per run, and a tidy table of all of them.

A record holds everything needed to read its numbers without the command line that made
them: the model (path, content hash, family, key), the dataset and split sizes, the protocol
with its version and every hyper-parameter, the metrics, the software and the device.
Each metric is a row: ``{"name": "top1", "value": 71.3, **coordinates}`` where the
coordinates say which point of a sweep it is (``k``, ``seed``, ``fraction``, ``head``...).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jepa_eval.core.atomic import TMP_MARKER, atomic_write_json
from jepa_eval.core.errors import JepaEvalError

DEFAULT_RESULTS_DIR = Path("results")
RECORD_SCHEMA = 1


@dataclass
class Metric:
    """One number: ``name`` (top1, top5, rankme...), ``value`` and where in a sweep it lies."""

    name: str
    value: float
    coords: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": None if self.value is None else float(self.value), **self.coords}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Metric:
        """A metric row of a result file: ``{"name", "value", **coords}``."""
        coords = {k: v for k, v in row.items() if k not in ("name", "value")}
        return cls(str(row["name"]), row["value"], coords)


@dataclass
class ModelInfo:
    """Which backbone produced the numbers: display ``name``, ``path`` (or spec) it was loaded
    from, the file's ``sha256`` (None for a training run's folder), checkpoint ``family``, the
    state dict used (``ckpt_key``) and the architecture (``build_vit`` arguments).

    Where the weights came from, when ``path`` does not say it all (optional, written only when
    set, so older records read unchanged): the local ``file`` read, the Hugging Face ``hub_id``,
    the commit ``hub_revision`` and the ``hub_file`` in that repository, or the ``url``; and the
    loader's ``notes`` (e.g. which I-JEPA encoder a timm port holds).
    """

    name: str
    path: str
    sha256: str | None
    family: str
    ckpt_key: str | None
    arch: dict[str, Any]
    file: str | None = None
    hub_id: str | None = None
    hub_revision: str | None = None
    hub_file: str | None = None
    url: str | None = None
    notes: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``model`` block of a result file: the identity always, provenance fields when set."""
        block = asdict(self)
        optional = ("file", "hub_id", "hub_revision", "hub_file", "url", "notes")
        return {k: v for k, v in block.items() if k not in optional or v is not None}


@dataclass
class DatasetInfo:
    """The data a protocol saw. Protocols that fit and score: ``train_split`` (``n_train`` rows,
    ``num_classes``) and ``eval_split`` (``n_eval`` rows). One-split protocols: ``split`` with
    ``n_split`` rows, of which ``n_used`` were measured. Fields a protocol has no use for are None
    and left out of the file."""

    name: str
    root: str | None = None
    train_split: str | None = None
    n_train: int | None = None
    num_classes: int | None = None
    eval_split: str | None = None
    n_eval: int | None = None
    split: str | None = None
    n_split: int | None = None
    n_used: int | None = None

    @property
    def scored_split(self) -> str | None:
        """The split the reported numbers are on: the evaluation split, else the measured one."""
        return self.eval_split or self.split


@dataclass
class FeatureInfo:
    """How images became features: the feature ``mode``, the input ``image_size`` in pixels and,
    for transfer, the ``candidates`` modes the winner was picked from."""

    mode: str
    image_size: int | None = None
    candidates: list[str] | None = None


def _without_none(block: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(block).items() if v is not None}


@dataclass
class ResultRecord:
    """Everything one protocol run produced. ``metrics`` holds every number it printed."""

    protocol: str
    protocol_version: str
    model: ModelInfo
    dataset: DatasetInfo
    features: FeatureInfo
    params: dict[str, Any]
    metrics: list[Metric]
    summary: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    created: str = ""
    command: list[str] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    schema: int = RECORD_SCHEMA

    def __post_init__(self) -> None:
        if not self.run_id:
            self.run_id = new_run_id(self.protocol)
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if not self.command:
            self.command = list(sys.argv)
        if not self.environment:
            self.environment = environment_info()

    @property
    def k_shot(self) -> bool:
        """Whether the record scores k-shot draws (``params.shots``), not the full training split."""
        return bool(self.params.get("shots"))

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object of its result file."""
        return {"protocol": self.protocol, "protocol_version": self.protocol_version,
                "model": self.model.as_dict(), "dataset": _without_none(self.dataset),
                "features": _without_none(self.features), "params": self.params,
                "metrics": [m.as_dict() for m in self.metrics], "summary": self.summary,
                "run_id": self.run_id, "created": self.created, "command": self.command,
                "environment": self.environment, "wall_time_s": self.wall_time_s, "schema": self.schema}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResultRecord:
        """A record from the JSON object of a result file (raises KeyError/TypeError if malformed)."""
        return cls(**{**data, "model": ModelInfo(**data["model"]), "dataset": DatasetInfo(**data["dataset"]),
                      "features": FeatureInfo(**data["features"]),
                      "metrics": [Metric.from_dict(row) for row in data["metrics"]]})


def new_run_id(protocol: str) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{protocol}-{uuid.uuid4().hex[:6]}"


def environment_info() -> dict[str, Any]:
    """Package versions, Python, host and device of this process."""
    from importlib import metadata

    versions: dict[str, str] = {}
    for package in ("jepa-eval", "torch", "torchvision", "timm", "faiss-cpu", "numpy",
                    "scikit-learn", "pandas"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    device = "cpu"
    try:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{torch.cuda.get_device_name(0)}"
        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        threads = os.cpu_count() or 1
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "device": device,
        "packages": versions,
    }


def write_record(record: ResultRecord, results_dir: str | os.PathLike[str] = DEFAULT_RESULTS_DIR) -> Path:
    """Write ``record`` atomically as ``RESULTS_DIR/<run_id>.json`` and return the path."""
    folder = Path(results_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JepaEvalError(f"cannot create the results directory {folder}",
                            expected="a writable directory", found=str(exc)) from exc
    if not os.access(folder, os.W_OK):
        raise JepaEvalError(f"the results directory {folder} is not writable",
                            expected="a directory this user can write to",
                            found="no write permission", hint="pass --results-dir")
    path = folder / f"{record.run_id}.json"
    atomic_write_json(path, record.to_json())
    return path


def read_record(path: str | os.PathLike[str]) -> ResultRecord:
    """Read one result file; raise :class:`JepaEvalError` if it is not a valid record."""
    path = Path(path)
    try:
        return ResultRecord.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise JepaEvalError(f"{path} is not a jepa-eval result file",
                            expected="a JSON record written by jepa-eval", found=str(exc)) from exc


def load_records(results_dir: str | os.PathLike[str]) -> list[ResultRecord]:
    """All result records under ``results_dir`` (recursively), oldest first.

    Temporary files of interrupted writes are never read.
    """
    folder = Path(results_dir)
    if not folder.is_dir():
        raise JepaEvalError(f"results directory {folder} does not exist",
                            expected="a folder of *.json result files")
    paths = sorted(p for p in folder.rglob("*.json") if TMP_MARKER not in p.name)
    records = []
    for p in paths:
        try:
            data = json.loads(p.read_text())
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("schema") == RECORD_SCHEMA and "protocol" in data:
            records.append(ResultRecord.from_json(data))
    return sorted(records, key=lambda r: r.created)
