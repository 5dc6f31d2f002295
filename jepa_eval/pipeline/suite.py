"""Protocol and suite files: the declarative "what" of a paper table, and the runner of a suite.

A protocol entry names a protocol, a dataset (and split for ``rank``), the feature modes, the
hyper-parameters (the fields of that protocol's config dataclass) and, for ``transfer``, the
datasets. A suite file lists entries inline or includes protocol files::

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

from jepa_eval.pipeline import evaluate as jobs
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.results.record import ResultRecord, load_records, write_record
from jepa_eval.features.splits import ExtractOptions, ModelSpec, check_mode

SUITE_PROTOCOLS = ("knn", "linear", "lowshot", "rank", "transfer")
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


def _entry(raw: Any, path: Path, where: str) -> ProtocolEntry:
    if not isinstance(raw, dict):
        raise _fail(path, where, "a protocol entry must be a mapping", "keys such as protocol, dataset, params", raw)
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        raise _fail(path, where, f"unknown key {sorted(unknown)[0]!r}", f"one of {', '.join(sorted(ENTRY_KEYS))}", sorted(unknown))
    protocol = raw.get("protocol")
    if protocol not in SUITE_PROTOCOLS:
        raise _fail(path, f"{where}.protocol", "unknown protocol", f"one of {', '.join(SUITE_PROTOCOLS)}", protocol)
    if protocol == "transfer":
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
        return Suite(name=path.stem, description="", entries=[_entry(raw, path, "protocol")], path=path)
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
            entries.append(_entry(item, path, f"protocols[{index}]"))
    return Suite(name=str(raw.get("suite", path.stem)), description=str(raw.get("description", "")),
                 entries=entries, path=path)


def config_for(entry: ProtocolEntry, where: str = "params") -> Any:
    """The protocol's config dataclass filled from ``entry.params`` (lists become tuples)."""
    from jepa_eval.protocols.knn import KNNConfig
    from jepa_eval.protocols.linear import LinearConfig
    from jepa_eval.protocols.lowshot import LowShotConfig

    kind = entry.inner if entry.protocol == "transfer" else entry.protocol
    classes = {"knn": KNNConfig, "linear": LinearConfig, "lowshot": LowShotConfig, "rank": jobs.RankConfig}
    if kind not in classes:
        raise JepaEvalError(f"{where}: transfer's inner protocol must be linear or knn", found=repr(kind))
    config_cls = classes[kind]
    names = {f.name for f in fields(config_cls)}
    unknown = set(entry.params) - names
    if unknown:
        raise JepaEvalError(f"{where}: unknown hyper-parameter {sorted(unknown)[0]!r} for {kind}",
                            expected=f"one of {', '.join(sorted(names))}", found=repr(sorted(unknown)))
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.params.items()}
    try:
        return config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise JepaEvalError(f"{where}: invalid hyper-parameters for {kind}", found=str(exc)) from exc


@dataclass
class SuiteOutcome:
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _done_keys(results_dir: Path) -> set[tuple[str, str]]:
    if not results_dir.is_dir():
        return set()
    return {(r.model.get("sha256"), r.params.get("suite_entry")) for r in load_records(results_dir)
            if r.params.get("suite_entry")}


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
                    log(f"done {label}: {_headline(record)}")
            except Exception as exc:  # noqa: BLE001 - the suite goes on; failures are reported
                if debug:
                    raise
                reason = exc.paragraph() if isinstance(exc, JepaEvalError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, JepaEvalError):
                    log(traceback.format_exc(limit=3))
                outcome.failed.append((label, reason))
                log(f"FAILED {label}: {reason}")
    return outcome


def _headline(record: ResultRecord) -> str:
    keys = ("top1", "best_top1", "rankme", "mode")
    shown = [f"{k} {record.summary[k]:.2f}" if isinstance(record.summary.get(k), float) else f"{k} {record.summary[k]}"
             for k in keys if k in record.summary]
    shown += [f"{k} {v:.2f}" for k, v in record.summary.items() if k.startswith("top1_mean")]
    return ", ".join(shown)


def _run_entry(spec: ModelSpec, backbone: Any, entry: ProtocolEntry, options: ExtractOptions,
               log: Callable[[str], Any]) -> list[ResultRecord]:
    config = config_for(entry)
    # dict.fromkeys: modes that resolve to the same features (raw pixels) run once
    modes = list(dict.fromkeys(check_mode(backbone, m) for m in entry.modes)) or [check_mode(backbone, None)]
    if entry.protocol == "transfer":
        from jepa_eval.pipeline.transfer import transfer_records

        return transfer_records(spec, backbone, list(entry.datasets), entry.inner, modes, config, options, log=log)
    records = []
    for mode in modes:
        if entry.protocol == "rank":
            records.append(jobs.rank_record(spec, backbone, entry.dataset, entry.split, mode, config, options, log=log))
            continue
        train, test = jobs.train_eval_features(backbone, entry.dataset, mode, options, log=log)
        if entry.protocol == "knn":
            records.append(jobs.run_knn(spec, backbone, train, test, mode, config))
        elif entry.protocol == "linear":
            records.append(jobs.run_linear(spec, backbone, train, test, mode, config, device=options.device,
                                           progress=options.progress))
        else:
            subset = jobs.subset_from_file(entry.dataset, entry.subset_file, options) if entry.subset_file else None
            records.append(jobs.run_lowshot(spec, backbone, train, test, mode, config, subset_indices=subset,
                                            subset_file=entry.subset_file, device=options.device,
                                            progress=options.progress))
    return records
