"""From result records to a tidy table, paper tables (Markdown, LaTeX) and a report folder.

Data flow: records -> :func:`tidy_frame` (one row per number) -> :func:`paper_table` (mean ± std
over seeds, best in bold) -> :func:`add_published` (optional rows from the I-JEPA paper) ->
:func:`to_markdown` / :func:`to_latex`. :func:`write_report` does all of it for a results
folder and draws the plots of :mod:`jepa_eval.report.plots`.

Conventions:

* A rerun of the same configuration (model, checkpoint, protocol, dataset, splits, feature
  mode, hyper-parameters, coordinates, seed) replaces the older numbers in the tidy frame.
* Paper tables pick k = 20 for k-NN, the chosen head's top-1 for linear probes, one column
  per label fraction / shot count for low-shot, and the last checkpoint for monitor runs.
* Standard deviations are sample std (ddof = 1) over seeds; a single seed shows the mean only.
* Bold marks the best mean of a column (ties at the printed precision all bold) when at least
  two of one's own rows have a value there; published rows never compete.
* If one model has several configurations in the same cell (two feature modes, two
  temperatures...), its row is split and each label names what differs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jepa_eval.core.atomic import atomic_path, atomic_write_text
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols import list_protocols
from jepa_eval.protocols.registry import Protocol, Shown, registered
from jepa_eval.results.record import ModelInfo, ResultRecord, load_records

PUBLISHED_CSV = Path(__file__).parent / "published.csv"
RECORD_COLUMNS = ("run_id", "created", "suite", "model", "family", "sha256", "ckpt_key", "protocol",
                  "protocol_version", "dataset", "train_split", "split", "mode", "image_size",
                  "transfer", "params", "seed")
COORD_ORDER = ("k", "fraction", "shots", "subset", "lr", "wd", "batchnorm", "head", "C", "epoch",
               "step", "checkpoint")
# Columns whose values make two rows of the same model different configurations.
CONFIG_COLUMNS = ("sha256", "ckpt_key", "protocol_version", "train_split", "split", "mode",
                  "image_size", "params")
NOT_HYPERPARAMETERS = ("seed", "suite", "suite_entry")
PERCENT_METRICS = frozenset({"top1", "top5", "val_top1", "knn_top1", "knn_top5"})
LOWER_IS_BETTER = frozenset({"mean_cosine", "uniformity"})


# ---------------------------------------------------------------------------- tidy frame

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


def collapse_epochs(records: Iterable[ResultRecord]) -> dict[str, int | None]:
    """``run_id -> summary['collapse_epoch']`` of every record that has one (monitor runs)."""
    return {r.run_id: r.summary["collapse_epoch"] for r in records if "collapse_epoch" in r.summary}


# ---------------------------------------------------------------------------- selection

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


# ---------------------------------------------------------------------------- tables

@dataclass
class Cell:
    """Mean and sample std (NaN for one seed) of ``n`` seeds; ``best`` if bold."""

    mean: float
    std: float
    n: int
    best: bool = False


@dataclass
class Table:
    """A paper table: ``cells[(row, column)]``; columns are tuples of ``column_fields`` values
    plus the low-shot setting ('' elsewhere). Reference rows hold published numbers."""

    metric: str
    row_header: str
    column_fields: tuple[str, ...]
    columns: list[tuple[str, ...]]
    rows: list[str]
    cells: dict[tuple[str, tuple[str, ...]], Cell]
    settings: str
    reference_rows: list[str] = field(default_factory=list)
    reference_cells: dict[tuple[str, tuple[str, ...]], Cell] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


def _natural_key(field_name: str, value: str) -> tuple[int, float, str]:
    """Protocols in registry order; other values by kind (fractions, shots, text) then number."""
    order = list(registered())
    if field_name == "protocol" and value in order:
        return (order.index(value), 0.0, value)
    number = re.match(r"[-+]?\d*\.?\d+", value)
    kind = 0 if value.endswith("%") else 1 if value.endswith("-shot") else 2  # fractions, then shots
    return (kind, float(number.group()) if number else float("inf"), value)


def _digits(metric: str, value: float) -> int:
    return 1 if metric in PERCENT_METRICS or abs(value) >= 10 else 3


def _join(values: Iterable[Any]) -> str:
    return "/".join(str(v) for v in sorted(set(values), key=str))


def _shown(rows: pd.DataFrame) -> Shown:
    """What a caption may say of ``rows``: their records' hyper-parameters and every column's values."""
    return Shown(params=[json.loads(p) for p in rows["params"].unique()],
                 values={str(c): rows[c].dropna().unique().tolist() for c in rows.columns})


def _settings_caption(rows: pd.DataFrame) -> str:
    parts = []
    for name in sorted(rows["protocol"].unique(), key=lambda p: _natural_key("protocol", p)):
        protocol = registered().get(name)
        sub = rows[rows["protocol"] == name]
        parts.append(protocol.caption(_shown(sub)) if protocol else f"{name}: on the {_join(sub['split'].dropna())} split")
    parts.append(f"features {_join(rows['mode'].dropna())}")
    if rows["image_size"].notna().any():
        parts.append(f"{_join(int(s) for s in rows['image_size'].dropna())} px")
    if rows["transfer"].any():
        parts.append("transfer runs pick the best feature mode per dataset")
    return "; ".join(parts)


def paper_table(frame: pd.DataFrame, *, protocol: str | None = None, metric: str = "top1",
                rows: str = "model", columns: Sequence[str] = ("protocol", "dataset"),
                select: Mapping[str, Any] | None = None) -> Table:
    """Mean ± std over seeds of ``metric`` per (row, column), best mean of each column bold.

    Rows are ``frame[rows]`` values (split into variants where configurations differ); columns
    are tuples of the ``columns`` fields plus the low-shot setting. Selection as in
    :func:`select_rows`. Two values for the same seed in one cell (e.g. two k values selected at
    once) are an error: fix the coordinate with ``select``.
    """
    columns = tuple(columns)
    chosen = select_rows(frame, protocol=protocol, metric=metric, select=select)
    cell_fields = [*columns, "setting"]
    chosen = chosen.assign(_row=variant_labels(chosen, cell_fields, name=rows),
                           _col=list(zip(*(chosen[c].map(str) for c in cell_fields))))
    cells: dict[tuple[str, tuple[str, ...]], Cell] = {}
    for (row, col), group in chosen.groupby(["_row", "_col"], sort=False):
        seeds = group["seed"].map(str)
        if seeds.duplicated().any():
            coords = [c for c in frame.columns[len(RECORD_COLUMNS):-2] if group[c].nunique() > 1]
            raise JepaEvalError(f"several values of {metric} for one seed in cell {row} / {' '.join(col)}",
                                expected="one value per seed", found=f"values differing in {coords or 'run'}",
                                hint="fix the coordinate with select={...}")
        values = group["value"].to_numpy(dtype=float)
        cells[(row, col)] = Cell(float(values.mean()),
                                 float(values.std(ddof=1)) if len(values) > 1 else float("nan"), len(values))
    column_keys = sorted({c for _, c in cells},
                         key=lambda c: [_natural_key(f, v) for f, v in zip(cell_fields, c)])
    for col in column_keys:
        present = [cell for (_, c), cell in cells.items() if c == col]
        if len(present) < 2:
            continue
        digits = _digits(metric, present[0].mean)
        pick = min if metric in LOWER_IS_BETTER else max
        best = pick(round(cell.mean, digits) for cell in present)
        for cell in present:
            cell.best = round(cell.mean, digits) == best
    return Table(metric=metric, row_header=rows, column_fields=columns, columns=column_keys,
                 rows=sorted({r for r, _ in cells}), cells=cells, settings=_settings_caption(chosen))


def load_published(path: str | Path = PUBLISHED_CSV) -> pd.DataFrame:
    """Published numbers with a ``label`` ('I-JEPA ViT-H/14') and a ``setting`` ('1%' or '')."""
    table = pd.read_csv(path)
    table["label"] = table["model"] + " " + table["arch"]
    table["setting"] = [f"{f * 100:g}%" if pd.notna(f) else "" for f in table["fraction"]]
    return table


def add_published(table: Table, published: pd.DataFrame | None = None) -> Table:
    """Reference rows for every published number that matches one of the table's columns.

    Matching uses the column fields ``protocol`` and ``dataset`` (other fields never match)
    and the table's metric; the sources used are listed for a footnote.
    """
    published = load_published() if published is None else published
    if not set(table.column_fields) <= {"protocol", "dataset"}:
        return table
    rows: dict[str, None] = {}
    sources: dict[str, None] = {}
    for _, ref in published[published["metric"] == table.metric].iterrows():
        key = (*(str(ref[f]) for f in table.column_fields), ref["setting"])
        if key in table.columns:
            table.reference_cells[(ref["label"], key)] = Cell(float(ref["value"]), float("nan"), 1)
            rows[ref["label"]] = None
            sources[ref["source"]] = None
    table.reference_rows = list(rows)
    table.sources = list(sources)
    return table


def table_to_frame(table: Table) -> pd.DataFrame:
    """Long form of a table: row, column (display label), mean, std, n, best, published."""
    records = [{"row": r, "column": column_label(c, table.column_fields), "mean": cell.mean,
                "std": cell.std, "n": cell.n, "best": cell.best, "published": published}
               for published, cells in ((False, table.cells), (True, table.reference_cells))
               for (r, c), cell in cells.items()]
    return pd.DataFrame(records, columns=["row", "column", "mean", "std", "n", "best", "published"])


def protocol_label(name: str) -> str:
    """How tables and plots name a protocol ('k-NN', 'low-shot'); its name when unregistered."""
    protocol = registered().get(name)
    return protocol.label if protocol else name


def column_label(column: tuple[str, ...], fields: Sequence[str]) -> str:
    """'k-NN cifar10', 'low-shot imagenet 1%': the non-empty parts, protocols spelled out."""
    parts = [protocol_label(v) if f == "protocol" else v
             for f, v in zip([*fields, "setting"], column)]
    return " ".join(p for p in parts if p and p != "nan")


def _cell_text(cell: Cell | None, metric: str, plus_minus: str) -> str:
    if cell is None:
        return "–"
    digits = _digits(metric, cell.mean)
    text = f"{cell.mean:.{digits}f}"
    return text if np.isnan(cell.std) else f"{text} {plus_minus} {cell.std:.{digits}f}"


def default_caption(table: Table) -> str:
    unit = " (%)" if table.metric in PERCENT_METRICS else ""
    return f"{table.metric}{unit}, mean ± std over seeds. {table.settings}."


def to_markdown(table: Table, caption: str | None = None) -> str:
    """A GitHub Markdown table; published rows follow an italic separator row, marked †."""
    caption = caption or default_caption(table)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [f"**Table.** {caption}", "",
           line([table.row_header, *(column_label(c, table.column_fields) for c in table.columns)]),
           "|---|" + "---:|" * len(table.columns)]
    for row in table.rows:
        texts = []
        for col in table.columns:
            cell = table.cells.get((row, col))
            text = _cell_text(cell, table.metric, "±")
            texts.append(f"**{text}**" if cell is not None and cell.best else text)
        out.append(line([row, *texts]))
    if table.reference_rows:
        out.append(line(["*published* †", *[""] * len(table.columns)]))
        out += [line([f"{row} †", *(_cell_text(table.reference_cells.get((row, c)), table.metric, "±")
                                    for c in table.columns)]) for row in table.reference_rows]
        out += ["", "† " + "; ".join(table.sources) + "."]
    return "\n".join(out) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                "±": r"$\pm$", "†": r"$^\dagger$", "–": "--"}


def tex_escape(text: str) -> str:
    """LaTeX-safe text (specials escaped, ± and † as math)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _tex_header(table: Table) -> list[str]:
    fields = table.column_fields
    if len(fields) < 2:
        return [" & ".join([tex_escape(table.row_header),
                            *(tex_escape(column_label(c, fields)) for c in table.columns)]) + r" \\"]
    groups: list[tuple[str, int]] = []
    for col in table.columns:
        if groups and groups[-1][0] == col[0]:
            groups[-1] = (col[0], groups[-1][1] + 1)
        else:
            groups.append((col[0], 1))
    top, rules, start = [""], [], 2
    for value, span in groups:
        label = tex_escape(column_label((value,), fields[:1]))
        top.append(label if span == 1 else rf"\multicolumn{{{span}}}{{c}}{{{label}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
        start += span
    bottom = [tex_escape(table.row_header),
              *(tex_escape(column_label(("", *c[1:]), fields)) for c in table.columns)]
    return [" & ".join(top) + r" \\", " ".join(rules), " & ".join(bottom) + r" \\"]


def to_latex(table: Table, caption: str | None = None) -> str:
    """A booktabs ``table`` environment: \\toprule, \\midrule, \\bottomrule; best in \\textbf;
    published rows in their own block under a \\midrule, sources in a footnote."""
    caption = caption or default_caption(table)

    def body(rows: list[str], cells: dict[tuple[str, tuple[str, ...]], Cell], mark: str) -> list[str]:
        lines = []
        for row in rows:
            texts = []
            for col in table.columns:
                cell = cells.get((row, col))
                text = tex_escape(_cell_text(cell, table.metric, "±"))
                texts.append(rf"\textbf{{{text}}}" if cell is not None and cell.best else text)
            lines.append(" & ".join([tex_escape(row) + mark, *texts]) + r" \\")
        return lines

    out = [r"\begin{table}[t]", r"\centering", rf"\caption{{{tex_escape(caption)}}}",
           r"\begin{tabular}{l" + "r" * len(table.columns) + "}", r"\toprule", *_tex_header(table),
           r"\midrule", *body(table.rows, table.cells, "")]
    if table.reference_rows:
        out += [r"\midrule", *body(table.reference_rows, table.reference_cells, r"$^\dagger$")]
    out += [r"\bottomrule", r"\end{tabular}"]
    if table.sources:
        out += [r"\par\smallskip{\footnotesize $^\dagger$ " + tex_escape("; ".join(table.sources)) + ".}"]
    return "\n".join([*out, r"\end{table}"]) + "\n"


# ---------------------------------------------------------------------------- report folder

def _report_tables(frame: pd.DataFrame) -> list[tuple[str, str | None, str]]:
    """(file stem, protocol or None for a shared table, metric) of the tables a report holds:
    those the protocols in ``frame`` declare and have the metric for."""
    has = set(zip(frame["protocol"], frame["metric"]))
    tables: dict[str, tuple[str, str | None, str]] = {}
    for protocol in list_protocols():
        for spec in protocol.tables:
            if (protocol.name, spec.metric) in has:
                tables.setdefault(spec.stem, (spec.stem, None if spec.shared else protocol.name, spec.metric))
    return list(tables.values())


def write_report(results_dir: str | Path, out_dir: str | Path, *, suite: str | None = None,
                 models: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
                 with_published: bool = False) -> list[Path]:
    """Tidy table (csv, parquet), paper tables (md, tex) and plots of every result under
    ``results_dir``, written into ``out_dir``; returns the paths written."""
    from jepa_eval.report import plots

    records = load_records(results_dir)
    if not records:
        raise JepaEvalError(f"no result records under {results_dir}",
                            expected="*.json files written by jepa-eval",
                            hint="run a protocol first, e.g. jepa-eval knn --ckpt ...")
    frame = filter_frame(tidy_frame(records), suite=suite, models=models, datasets=datasets)
    out = Path(out_dir)
    written = write_tidy(frame, out)
    for stem, protocol, metric in _report_tables(frame):
        table = paper_table(frame, protocol=protocol, metric=metric)
        if with_published:
            table = add_published(table)
        written.append(atomic_write_text(out / "tables" / f"{stem}.md", to_markdown(table)))
        written.append(atomic_write_text(out / "tables" / f"{stem}.tex", to_latex(table)))
    kept = set(frame["run_id"])
    written += plots.write_plots(frame, out / "plots",
                                 collapse={k: v for k, v in collapse_epochs(records).items() if k in kept})
    return written
