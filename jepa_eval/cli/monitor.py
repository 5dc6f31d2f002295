"""``jepa-eval monitor RUN_DIR``: the rank metrics (and a quick k-NN) of every checkpoint of a training run."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from jepa_eval.cli import options as c
from jepa_eval.cli.protocols import config_from_options, config_options
from jepa_eval.protocols import get_protocol

RunDirArg = Annotated[Path, typer.Argument(help="Training folder with *-ep{N}.pth.tar / *-latest.pth.tar files.")]


def monitor_command() -> Callable[..., None]:
    """The ``monitor`` command: RUN_DIR, the dataset, and the options of the monitor's config."""
    protocol = get_protocol("monitor", runs_on="run")
    own, parsers = config_options(protocol)

    def monitor(run_dir: Path, data: str, *, shared: c.Shared, **values: Any) -> None:
        from jepa_eval.pipeline.monitor import monitor_run
        from jepa_eval.report.plots import plot_monitor
        from jepa_eval.report.tidy import collapse_epochs, tidy_frame

        config = config_from_options(protocol, parsers, values, shared)
        record = monitor_run(run_dir, data, config, shared.options, mode=shared.mode, log=c.console.print)
        path = c.finish(record, shared.results_dir, shared.json_out, f"monitor of {run_dir} on {data}")
        collapse = record.summary["collapse_epoch"]
        c.console.print("no collapse flagged" if collapse is None else f"[bold red]collapse flagged from epoch {collapse}[/]")
        for plot in plot_monitor(tidy_frame([record]), path.with_suffix(""), protocol=protocol.name,
                                 collapse=collapse_epochs([record])):
            c.console.print(f"plot: {plot}")

    monitor.__doc__ = "Rank metrics (and k-NN) of every checkpoint of a training run, with the epoch where collapse began."
    fixed = [inspect.Parameter("run_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=RunDirArg),
             inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="digits", annotation=c.DataOpt)]
    shared_param = inspect.Parameter("shared", inspect.Parameter.KEYWORD_ONLY, annotation=c.Shared)
    monitor.__signature__ = inspect.Signature([*fixed, *own, shared_param])  # type: ignore[attr-defined]
    return c.shared_options("extract", "mode", "results", "json")(monitor)
