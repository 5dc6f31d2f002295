"""A report folder from a results folder: the tidy table, the paper tables (Markdown, LaTeX)
and every plot the protocols ask for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from jepa_eval.core.atomic import atomic_write_text
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols import list_protocols
from jepa_eval.report import plots
from jepa_eval.report.tables import add_published, paper_table, to_latex, to_markdown
from jepa_eval.report.tidy import collapse_points, filter_frame, tidy_frame, write_tidy
from jepa_eval.results.record import load_records

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
                                 collapse={k: v for k, v in collapse_points(records).items() if k in kept})
    return written
