"""Which rows of the tidy frame a table or plot shows, and how its rows are labelled.

Each protocol's declared table coordinates apply (k-NN: k = 20; monitor: the last epoch); a model
with several configurations in one cell (two feature modes, two temperatures...) gets one row per
configuration, each label naming what differs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols import list_protocols
from jepa_eval.protocols.registry import Protocol, registered

# Columns whose values make two rows of the same model different configurations.
CONFIG_COLUMNS = ("sha256", "ckpt_key", "protocol_version", "train_split", "split", "mode",
                  "image_size", "params")


def _setting(row: pd.Series) -> str:
    """The table sub-column of a row, as its protocol names it ('1%', '5-shot'; '' for most)."""
    protocol = registered().get(row["protocol"])
    if protocol is None or protocol.setting is None:
        return ""
    return protocol.setting({k: v for k, v in row.items() if isinstance(k, str) and not _missing(v)})


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def select_rows(frame: pd.DataFrame, *, protocol: str | None = None, metric: str = "top1",
                select: Mapping[str, Any] | None = None, defaults: bool = True) -> pd.DataFrame:
    """The rows a table or plot shows, with a ``setting`` column (low-shot: '1%', '5-shot').

    ``select`` maps a column to a value or a list of values. With ``defaults``, each protocol's
    ``table_coords`` fix its coordinates (k-NN: k = 20) unless ``select`` names them, and its
    ``table_latest`` coordinate keeps each run's last value (monitor: the last epoch); protocols
    that run on a training run (monitor) are left out unless ``protocol`` names one.
    """
    select = dict(select or {})
    rows = frame[frame["metric"] == metric]
    run_level = [p.name for p in list_protocols("run")]
    rows = rows[rows["protocol"] == protocol] if protocol else rows[~rows["protocol"].isin(run_level)]
    for column, wanted in select.items():
        if column not in frame.columns:
            raise JepaEvalError(f"cannot select on '{column}'",
                                expected="a column of the tidy frame",
                                found=", ".join(map(str, frame.columns)))
        values = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        rows = rows[rows[column].isin(values)]
    if defaults:
        for proto in list_protocols():
            rows = table_defaults(rows, proto, select)
    if rows.empty:
        shown = sorted(frame[["protocol", "metric"]].drop_duplicates().itertuples(index=False))
        raise JepaEvalError(f"no results for metric '{metric}'"
                            + (f" of protocol '{protocol}'" if protocol else ""),
                            expected="results matching the protocol, metric and selection",
                            found="protocol/metric pairs " + ", ".join(f"{p}/{m}" for p, m in shown[:20]))
    return rows.assign(setting=[_setting(r) for _, r in rows.iterrows()])


def table_defaults(rows: pd.DataFrame, protocol: Protocol, select: Mapping[str, Any]) -> pd.DataFrame:
    """``rows`` with ``protocol``'s rows cut to its table coordinates and latest values."""
    for column, value in protocol.table_coords.items():
        mine = rows["protocol"] == protocol.name
        if column in select or column not in rows.columns or not mine.any():
            continue
        if not (rows.loc[mine, column] == value).any():
            found = sorted(rows.loc[mine, column].dropna().unique())
            raise JepaEvalError(f"the {protocol.label} results have no {column}={value}", expected=f"{column}={value}",
                                found=f"{column} in {found}", hint=f"pass select={{'{column}': ...}} to pick another")
        rows = rows[~mine | (rows[column] == value)]
    latest = protocol.table_latest
    if latest is not None and latest not in select and latest in rows.columns:
        mine = rows["protocol"] == protocol.name
        rows = rows[~mine | (rows[latest] == rows.groupby("run_id")[latest].transform("max"))]
    return rows


def _differing_fields(group: pd.DataFrame) -> list[str]:
    fields = [c for c in CONFIG_COLUMNS if c != "params" and group[c].map(str).nunique() > 1]
    params = [json.loads(p) for p in group["params"].unique()]
    keys = sorted(set().union(*params))
    fields += [f"params.{k}" for k in keys if len({json.dumps(p.get(k), default=str) for p in params}) > 1]
    return fields


def _field_value(row: pd.Series, name: str) -> str:
    if name.startswith("params."):
        value = json.loads(row["params"]).get(name[len("params."):], "-")
        return f"{name[len('params.'):]}={value}"
    value = row[name]
    return f"ckpt {str(value)[:8]}" if name == "sha256" else f"{name}={value}"


def variant_labels(frame: pd.DataFrame, cell_fields: Sequence[str], name: str = "model") -> pd.Series:
    """Row labels: ``frame[name]``, plus what differs where one cell would mix configurations.

    A cell is a group of ``(name, *cell_fields)``; if it holds rows of several configurations
    (``CONFIG_COLUMNS``), every row of that name is labelled with the fields that differ there,
    e.g. ``'ijepa-b16 (mode=cls)'``.
    """
    config = ["\x1f".join(map(str, values)) for values in frame[list(CONFIG_COLUMNS)].itertuples(index=False)]
    differing: dict[str, list[str]] = {}
    for keys, group in frame.assign(_config=config).groupby([name, *cell_fields], dropna=False):
        if group["_config"].nunique() > 1:
            label = str(keys[0])
            differing[label] = sorted(set(differing.get(label, [])) | set(_differing_fields(group)),
                                      key=_field_order)
    labels = frame[name].map(str)
    return pd.Series([label if label not in differing else
                      f"{label} ({', '.join(_field_value(row, f) for f in differing[label])})"
                      for label, (_, row) in zip(labels, frame.iterrows())], index=frame.index)


def _field_order(name: str) -> tuple[int, str]:
    base = name.split(".")[0]
    return (CONFIG_COLUMNS.index(base) if base in CONFIG_COLUMNS else len(CONFIG_COLUMNS), name)


def protocol_label(name: str) -> str:
    """How tables and plots name a protocol ('k-NN', 'low-shot'); its name when unregistered."""
    protocol = registered().get(name)
    return protocol.label if protocol else name
