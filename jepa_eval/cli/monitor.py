"""``jepa-eval monitor RUN_DIR``: the rank metrics (and a quick k-NN) of every checkpoint of a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jepa_eval.cli import options as c


@c.shared_options("extract", "mode", "results", "json")
def monitor(run_dir: Annotated[Path, typer.Argument(help="Training folder with *-ep{N}.pth.tar / *-latest.pth.tar files.")],
            data: c.DataOpt = "digits",
            samples: Annotated[int, typer.Option("--samples", help="Seeded training rows for the rank metrics.")] = 2000,
            knn_check: Annotated[bool, typer.Option("--knn/--no-knn", help="Also a quick k-NN (k=20) on fixed subsets.")] = True,
            lidar: Annotated[bool, typer.Option("--lidar/--no-lidar", help="Also LiDAR (extra forward passes).")] = False,
            rankme_fraction: Annotated[float, typer.Option("--rankme-fraction", help="Collapse when RankMe falls below this share of its peak.")] = 0.2,
            ckpt_key: Annotated[str, typer.Option("--ckpt-key", help="Encoder to measure.")] = "target_encoder",
            *, shared: c.Shared) -> None:
    """Rank metrics (and k-NN) of every checkpoint of a training run, with the epoch where collapse began."""
    from jepa_eval.pipeline.monitor import MonitorConfig, monitor_run
    from jepa_eval.report.plots import plot_monitor
    from jepa_eval.report.tables import collapse_epochs, tidy_frame

    watch = c.Stopwatch()
    options = shared.options
    config = MonitorConfig(samples=samples, seed=shared.seed, ckpt_key=ckpt_key, knn=knn_check, lidar=lidar,
                           rankme_fraction=rankme_fraction)
    record = monitor_run(run_dir, data, config, options, mode=shared.mode, log=c.console.print)
    record.wall_time_s = watch.seconds
    path = c.finish(record, shared.results_dir, shared.json_out, f"monitor of {run_dir} on {data}")
    collapse = record.summary["collapse_epoch"]
    c.console.print("no collapse flagged" if collapse is None else f"[bold red]collapse flagged from epoch {collapse}[/]")
    for plot in plot_monitor(tidy_frame([record]), path.with_suffix(""), collapse=collapse_epochs([record])):
        c.console.print(f"plot: {plot}")
