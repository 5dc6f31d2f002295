"""Paper tables from the tidy frame: Markdown and LaTeX, with published numbers as a reference block.

Data flow: records -> :func:`jepa_eval.report.tidy.tidy_frame` (one row per number) ->
:func:`paper_table` (mean ± std over seeds, best in bold) -> :func:`add_published` (optional rows
from the I-JEPA paper) -> :func:`to_markdown` / :func:`to_latex`.

Conventions:

* Paper tables pick k = 20 for k-NN, the chosen head's top-1 for linear probes, one column
  per label fraction / shot count for low-shot, and the last checkpoint for monitor runs.
* Standard deviations are sample std (ddof = 1) over seeds; a single seed shows the mean only.
* Bold marks the best mean of a column (ties at the printed precision all bold) when at least
  two of one's own rows have a value there; published rows never compete.
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

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.registry import Shown, registered
from jepa_eval.report.select import protocol_label, select_rows, variant_labels
from jepa_eval.report.tidy import RECORD_COLUMNS

PUBLISHED_CSV = Path(__file__).parent / "published.csv"
PERCENT_METRICS = frozenset({"top1", "top5", "val_top1", "knn_top1", "knn_top5"})
LOWER_IS_BETTER = frozenset({"mean_cosine", "uniformity"})


# ---------------------------------------------------------------------------- tidy frame


# ---------------------------------------------------------------------------- selection


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


