"""Protocol and suite files: the declarative "what" of a paper table, and the runner of a suite.

A protocol entry names a protocol, a dataset (and split for ``rank``), the feature modes, the
hyper-parameters (the fields of that protocol's config dataclass) and, for ``transfer``, the
datasets. An entry of another protocol with ``datasets`` instead of ``dataset`` stands for one
entry per dataset. A suite file lists entries inline or includes protocol files::

    suite: cpu-quick
    description: minutes on a CPU
    protocols:
      - {protocol: knn, dataset: digits, params: {ks: [10, 20]}}
      - include: other-protocol.yaml

``run_suite`` runs every entry for every model, extracting each (model, dataset, split, mode)
once (the feature cache), skips entries that already have a result in the results directory
(``force`` reruns), and goes on past a failing entry, reporting it at the end.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.features.splits import ExtractOptions, resolve_mode
from jepa_eval.pipeline.evaluate import distinct_modes, run_protocol
from jepa_eval.pipeline.transfer import check_transferable, transfer_records
from jepa_eval.protocols import list_protocols
from jepa_eval.protocols.registry import Protocol, build_config
from jepa_eval.results.record import ResultRecord, load_records, write_record

TRANSFER = "transfer"  # the entry kind that runs its ``inner`` protocol over ``datasets``
SHIPPED_SUITES = "jepa_eval.suites"
"""The package holding the shipped suite files (the repository's ``protocols/`` folder)."""
ENTRY_KEYS = {"protocol", "dataset", "datasets", "split", "modes", "params", "subset_file", "inner", "name"}


@dataclass(frozen=True)
class ProtocolEntry:
    """One protocol run per model. ``params`` are fields of the protocol's config dataclass."""

    protocol: str
    dataset: str | None = None
    datasets: tuple[str, ...] = ()
    split: str | None = None
    modes: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    subset_file: str | None = None
    inner: str = "linear"
    name: str | None = None

    def key(self) -> str:
        """Content hash of the entry: with the model's hash it identifies a result."""
        text = json.dumps({f.name: getattr(self, f.name) for f in fields(self)}, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self) -> str:
        return self.name or f"{self.protocol}:{self.dataset or ','.join(self.datasets)}"


@dataclass
class Suite:
    name: str
    description: str
    entries: list[ProtocolEntry]
    path: Path


def _fail(path: Path, where: str, problem: str, expected: str, found: Any) -> JepaEvalError:
    return JepaEvalError(f"{path}: {where}: {problem}", expected=expected, found=repr(found))


def _entries(raw: Any, path: Path, where: str) -> list[ProtocolEntry]:
    """The entry ``raw``, or one per dataset of a non-transfer entry with ``datasets``."""
    if not isinstance(raw, dict) or raw.get("protocol") == TRANSFER or "datasets" not in raw or "dataset" in raw:
        return [_entry(raw, path, where)]
    datasets = raw["datasets"]
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, str) for d in datasets):
        raise _fail(path, f"{where}.datasets", "datasets must be a list of dataset names",
                    "a non-empty list of strings", datasets)
    single = {k: v for k, v in raw.items() if k != "datasets"}
    return [_entry({**single, "dataset": dataset, **({"name": f"{raw['name']}:{dataset}"} if "name" in raw else {})},
                   path, f"{where}.datasets[{i}]") for i, dataset in enumerate(datasets)]


def _entry(raw: Any, path: Path, where: str) -> ProtocolEntry:
    if not isinstance(raw, dict):
        raise _fail(path, where, "a protocol entry must be a mapping", "keys such as protocol, dataset, params", raw)
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        raise _fail(path, where, f"unknown key {sorted(unknown)[0]!r}", f"one of {', '.join(sorted(ENTRY_KEYS))}", sorted(unknown))
    protocol = raw.get("protocol")
    kinds = [p.name for p in list_protocols("model")] + [TRANSFER]
    if protocol not in kinds:
        raise _fail(path, f"{where}.protocol", "unknown protocol", f"one of {', '.join(kinds)}", protocol)
    if protocol == TRANSFER:
        datasets = raw.get("datasets")
        if not isinstance(datasets, list) or not datasets or not all(isinstance(d, str) for d in datasets):
            raise _fail(path, f"{where}.datasets", "transfer needs a list of dataset names", "a non-empty list of strings", datasets)
    elif not isinstance(raw.get("dataset"), str):
        raise _fail(path, f"{where}.dataset", "missing or not a string", "a dataset name such as digits or cifar10", raw.get("dataset"))
    modes = raw.get("modes", [])
    if not isinstance(modes, list) or not all(isinstance(m, str) for m in modes):
        raise _fail(path, f"{where}.modes", "must be a list of feature modes", "e.g. [avgpool, avgpool4]", modes)
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise _fail(path, f"{where}.params", "must be a mapping", "a mapping of hyper-parameters", params)
    entry = ProtocolEntry(protocol=protocol, dataset=raw.get("dataset"), datasets=tuple(raw.get("datasets") or ()),
                          split=raw.get("split"), modes=tuple(modes), params=params,
                          subset_file=raw.get("subset_file"), inner=raw.get("inner", "linear"), name=raw.get("name"))
    config_for(entry, where=f"{path}: {where}.params")  # validates the hyper-parameters now
    return entry


def shipped_suites() -> list[str]:
    """Names of the suites shipped with the package, e.g. ``cpu-quick``."""
    folder = importlib.resources.files(SHIPPED_SUITES)
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def resolve_suite(name: str | Path) -> Path:
    """``name`` itself when it is a file or has a suffix, else the shipped suite of that name
    (``cpu-quick`` -> the package's ``cpu-quick.yaml``)."""
    path = Path(name)
    if path.exists() or path.suffix:
        return path
    return Path(str(importlib.resources.files(SHIPPED_SUITES) / f"{path.name}.yaml"))


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite (or a single protocol) file; errors name the file and key path."""
    path = Path(path)
    if not path.is_file():
        raise JepaEvalError(f"suite file {path} does not exist",
                            expected="a YAML suite file, or the name of a shipped suite: " + ", ".join(shipped_suites()))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise JepaEvalError(f"{path} is not valid YAML", expected="a YAML mapping such as protocols/cpu-quick.yaml",
                            found=str(exc).splitlines()[0]) from exc
    if isinstance(raw, dict) and "protocol" in raw:
        return Suite(name=path.stem, description="", entries=_entries(raw, path, "protocol"), path=path)
    if not isinstance(raw, dict) or not isinstance(raw.get("protocols"), list):
        raise _fail(path, "top level", "not a suite", "a mapping with 'suite' and a 'protocols' list", type(raw).__name__)
    unknown = set(raw) - {"suite", "description", "protocols"}
    if unknown:
        raise _fail(path, "top level", f"unknown key {sorted(unknown)[0]!r}", "suite, description, protocols", sorted(unknown))
    entries: list[ProtocolEntry] = []
    for index, item in enumerate(raw["protocols"]):
        if isinstance(item, dict) and set(item) == {"include"}:
            entries += load_suite(path.parent / item["include"]).entries
        else:
            entries += _entries(item, path, f"protocols[{index}]")
    return Suite(name=str(raw.get("suite", path.stem)), description=str(raw.get("description", "")),
                 entries=entries, path=path)


def entry_protocol(entry: ProtocolEntry, where: str = "protocol") -> Protocol:
    """The registered protocol an entry runs (transfer's inner protocol for a transfer entry)."""
    from jepa_eval.protocols import get_protocol

    try:
        protocol = get_protocol(entry.inner if entry.protocol == TRANSFER else entry.protocol, runs_on="model")
    except JepaEvalError as exc:
        raise JepaEvalError(f"{where}: {exc.problem}", expected=exc.expected, found=exc.found) from exc
    return check_transferable(protocol) if entry.protocol == TRANSFER else protocol


def config_for(entry: ProtocolEntry, where: str = "params") -> Any:
    """The protocol's config dataclass filled from ``entry.params`` (and the entry's ``subset_file``)."""
    params = dict(entry.params)
    if entry.subset_file is not None:
        params["subset_file"] = entry.subset_file
    protocol = entry_protocol(entry, where)
    return build_config(protocol.config, params, f"{where} for {protocol.name}")


@dataclass
class SuiteOutcome:
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _done_keys(results_dir: Path) -> set[tuple[str, str]]:
    if not results_dir.is_dir():
        return set()
    return {(r.model.sha256, r.params["suite_entry"]) for r in load_records(results_dir) if "suite_entry" in r.params}


def run_suite(suite: Suite, models: list[ModelSpec], options: ExtractOptions, results_dir: Path, *,
              force: bool = False, debug: bool = False, log: Callable[[str], Any] = print) -> SuiteOutcome:
    """Every entry for every model; one result file per (model, entry)."""
    outcome = SuiteOutcome()
    done = set() if force else _done_keys(results_dir)
    for spec in models:
        backbone = spec.load()
        log(f"model {spec.display_name()}: {backbone.describe()}")
        for entry in suite.entries:
            label = f"{spec.display_name()} / {entry.label()}"
            if (backbone.sha256, entry.key()) in done:
                outcome.skipped.append(label)
                log(f"skip {label}: a result exists (--force to rerun)")
                continue
            try:
                for record in _run_entry(spec, backbone, entry, options, log):
                    record.params["suite"] = suite.name
                    record.params["suite_entry"] = entry.key()
                    outcome.written.append(write_record(record, results_dir))
                    log(f"done {label}: {_headline(entry_protocol(entry), record)}")
            except Exception as exc:  # noqa: BLE001 - the suite goes on; failures are reported
                if debug:
                    raise
                reason = exc.paragraph() if isinstance(exc, JepaEvalError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, JepaEvalError):
                    log(traceback.format_exc(limit=3))
                outcome.failed.append((label, reason))
                log(f"FAILED {label}: {reason}")
    return outcome


def _headline(protocol: Protocol, record: ResultRecord) -> str:
    """The protocol's headline summary values (and the winning mode of a transfer)."""
    shown = [(key, value) for key, value in record.summary.items()
             if any(key == h or key.startswith(f"{h}[") for h in protocol.headline) or key == "mode"]
    return ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown)


def _run_entry(spec: ModelSpec, backbone: Any, entry: ProtocolEntry, options: ExtractOptions,
               log: Callable[[str], Any]) -> list[ResultRecord]:
    protocol, config = entry_protocol(entry), config_for(entry)
    # dict.fromkeys: modes that resolve to the same features (raw pixels) run once
    modes = list(dict.fromkeys(resolve_mode(backbone, m) for m in entry.modes)) or [resolve_mode(backbone, None)]
    if entry.protocol == TRANSFER:
        return transfer_records(spec, backbone, list(entry.datasets), protocol, modes, config, options, log=log)
    records = [run_protocol(protocol, config, spec, backbone, entry.dataset, mode, options, split=entry.split, log=log)
               for mode in distinct_modes(protocol, config, modes)]
    return [record for record in records if record is not None]
