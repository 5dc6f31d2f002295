"""The tidy frame: one row per number of every result record, with the record's identity.

A rerun of the same configuration (model, checkpoint, protocol, dataset, splits, feature mode,
hyper-parameters, coordinates, seed) replaces the older numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from jepa_eval.core.atomic import atomic_path, atomic_write_text
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.results.record import ModelInfo, ResultRecord

RECORD_COLUMNS = ("run_id", "created", "suite", "model", "family", "sha256", "ckpt_key", "protocol",
                  "protocol_version", "dataset", "train_split", "split", "mode", "image_size",
                  "transfer", "params", "seed")


COORD_ORDER = ("k", "fraction", "shots", "subset", "lr", "wd", "batchnorm", "head", "C", "epoch",
               "step", "checkpoint")


NOT_HYPERPARAMETERS = ("seed", "suite", "suite_entry")


def _model_name(model: ModelInfo) -> str:
    return model.name or Path(model.path or "").name or (model.sha256 or "")[:12] or "unnamed"


def _record_fields(record: ResultRecord) -> dict[str, Any]:
    params = record.params
    hyper = {k: v for k, v in params.items() if k not in NOT_HYPERPARAMETERS}
    return {
        "run_id": record.run_id, "created": record.created, "suite": params.get("suite"),
        "model": _model_name(record.model), "family": record.model.family,
        "sha256": record.model.sha256, "ckpt_key": record.model.ckpt_key,
        "protocol": record.protocol, "protocol_version": str(record.protocol_version),
        "dataset": record.dataset.name, "train_split": record.dataset.train_split,
        "split": record.dataset.scored_split, "mode": record.features.mode,
        "image_size": record.features.image_size, "transfer": bool(params.get("transfer", False)),
        "params": json.dumps(hyper, sort_keys=True, default=str), "seed": params.get("seed"),
    }


def _scalar(value: Any) -> Any:
    """Lists and dicts as JSON text so rows can be compared and written to parquet."""
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (list, dict)) else value


def tidy_frame(records: Iterable[ResultRecord]) -> pd.DataFrame:
    """One row per number of every record: the record's identity, its coordinates, metric, value.

    Columns: ``RECORD_COLUMNS`` (``params`` is the record's hyper-parameters as sorted JSON,
    without ``seed`` and ``suite``; ``split`` is the evaluation split), then one column per
    coordinate found in any metric (``k``, ``fraction``, ``shots``, ``lr``, ``epoch``...), then
    ``metric`` and ``value``. A coordinate named like a record column (``seed``, ``mode``)
    overrides it for that row. Older duplicates of the same configuration are dropped.
    """
    rows: list[dict[str, Any]] = []
    coord_names: set[str] = set()
    for record in sorted(records, key=lambda r: r.created):
        base = _record_fields(record)
        for metric in record.metrics:
            coords = {k: _scalar(v) for k, v in metric.coords.items()}
            coord_names.update(k for k in coords if k not in RECORD_COLUMNS)
            rows.append({**base, **coords, "metric": metric.name,
                         "value": float("nan") if metric.value is None else float(metric.value)})
    coords_sorted = sorted(coord_names, key=lambda c: (COORD_ORDER.index(c) if c in COORD_ORDER
                                                       else len(COORD_ORDER), c))
    frame = pd.DataFrame(rows, columns=[*RECORD_COLUMNS, *coords_sorted, "metric", "value"])
    identity = [c for c in frame.columns if c not in ("run_id", "created", "suite", "family",
                                                       "transfer", "value")]
    return frame.drop_duplicates(subset=identity, keep="last").reset_index(drop=True)


def filter_frame(frame: pd.DataFrame, *, suite: str | None = None,
                 models: Sequence[str] | None = None,
                 datasets: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of one suite (``params.suite``), of some models and of some datasets."""
    for column, wanted in (("suite", [suite] if suite else None), ("model", models),
                           ("dataset", datasets)):
        if not wanted:
            continue
        kept = frame[frame[column].isin(list(wanted))]
        if kept.empty:
            available = sorted(frame[column].dropna().astype(str).unique())
            raise JepaEvalError(f"no results for {column} {', '.join(map(str, wanted))}",
                                expected=f"one of the {column} values in the results",
                                found=", ".join(available) or "none")
        frame = kept
    return frame


def write_tidy(frame: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write ``tidy.csv`` and ``tidy.parquet`` (pyarrow) atomically; return both paths."""
    out = Path(out_dir)
    csv_path = atomic_write_text(out / "tidy.csv", frame.to_csv(index=False))
    parquet = frame.copy()
    for column in parquet.columns[parquet.dtypes == object]:
        kinds = {type(v) for v in parquet[column].dropna()}
        if len(kinds) > 1:  # e.g. a coordinate that is a number in one record, text in another
            parquet[column] = parquet[column].map(lambda v: v if pd.isna(v) else str(v))
    with atomic_path(out / "tidy.parquet") as tmp:
        parquet.to_parquet(tmp, engine="pyarrow", index=False)
    return [csv_path, out / "tidy.parquet"]


def collapse_points(records: Iterable[ResultRecord]) -> dict[str, int | None]:
    """``run_id ->`` where collapse began (None: never) of every monitor record, on the record's
    own axis: the epoch of a checkpoint monitor (``collapse_epoch``), the step of a live one
    (``collapse_step``)."""
    return {r.run_id: r.summary[f"collapse_{r.summary.get('axis', 'epoch')}"] for r in records
            if f"collapse_{r.summary.get('axis', 'epoch')}" in r.summary}
