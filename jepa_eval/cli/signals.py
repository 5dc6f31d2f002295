"""``jepa-eval signals RUN_DIR``: which label-free signal of a training run tracks probe accuracy (Spearman rho)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from jepa_eval.cli import options as c
from jepa_eval.cli.protocols import config_from_options, config_options
from jepa_eval.protocols import get_protocol

RunDirArg = Annotated[Path, typer.Argument(help="Training folder whose monitor record and checkpoints' records to read.")]
RecordsOpt = Annotated[Path | None, typer.Option("--records", help="Folder of result records to read, searched recursively (default: --results-dir).")]
DataOpt = Annotated[str | None, typer.Option("--data", help="Dataset of the monitor record and the accuracy (default: the newest monitor record's).")]


def signals_command() -> Callable[..., None]:
    """The ``signals`` command: RUN_DIR, where the records are, and the options of the signals config."""
    protocol = get_protocol("signals", runs_on="run")
    own, parsers = config_options(protocol)

    def signals(run_dir: Path, records: Path | None, data: str | None, *, shared: c.Shared, **values: Any) -> None:
        from jepa_eval.core.atomic import atomic_write_text
        from jepa_eval.pipeline.signals import gather, signals_record
        from jepa_eval.report.plots import plot_signals
        from jepa_eval.report.signals import signals_markdown
        from jepa_eval.report.tidy import tidy_frame
        from jepa_eval.results.record import load_records

        started = time.perf_counter()
        config = config_from_options(protocol, parsers, values, shared)
        gathered = gather(load_records(records or shared.results_dir), run_dir, config, data)
        record = signals_record(gathered, config, started)
        path = c.finish(record, shared.results_dir, shared.json_out, f"signals of {run_dir}")
        table = atomic_write_text(path.with_suffix(".md"), signals_markdown(record))
        c.console.print(f"table: {table}")
        for plot in plot_signals(tidy_frame([record]), path.with_suffix(""))[:1]:
            c.console.print(f"plot: {plot}")
        best, tied = record.summary["best_signal"], record.summary["tied_with"]
        c.console.print("no signal could be ranked (fewer than 3 checkpoints with both)" if best is None else
                        f"best: {best}, rho = {record.summary['best_rho']:.2f} over {record.summary['best_n']} checkpoints"
                        + (f" (|rho| tied with {', '.join(tied)})" if tied else ""), highlight=False)

    signals.__doc__ = ("Spearman rho of each label-free signal (training loss, RankMe, LiDAR, alpha-ReQ) with probe "
                       "accuracy across a run's checkpoints, from its monitor record and its checkpoints' records.")
    fixed = [inspect.Parameter("run_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=RunDirArg),
             inspect.Parameter("records", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=RecordsOpt),
             inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=DataOpt)]
    shared_param = inspect.Parameter("shared", inspect.Parameter.KEYWORD_ONLY, annotation=c.Shared)
    signals.__signature__ = inspect.Signature([*fixed, *own, shared_param])  # type: ignore[attr-defined]
    return c.shared_options("results", "json")(signals)
