"""Options shared by the ``jepa-eval`` commands, and the printing of results."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from jepa_eval.results import ResultRecord, write_record
from jepa_eval.runner import ExtractOptions, ModelSpec

console = Console(stderr=True)
stdout = Console()

CkptOpt = Annotated[str, typer.Option("--ckpt", help="Checkpoint file, or timm:MODEL_NAME (random init unless --weights).")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Model name in results (default: file name).")]
CkptKeyOpt = Annotated[str | None, typer.Option("--ckpt-key", help="State dict inside the file: target_encoder (I-JEPA default), encoder, teacher, student, model.")]
HeadsOpt = Annotated[int | None, typer.Option("--num-heads", help="Attention heads, when the width is not a standard one.")]
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="State dict for a timm:MODEL_NAME backbone.")]
ImageSizeOpt = Annotated[int | None, typer.Option("--image-size", help="Input size in pixels (default: the checkpoint's).")]
TrustOpt = Annotated[bool, typer.Option("--trust-checkpoint", help="Allow arbitrary pickled objects in the checkpoint (runs code from the file!).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for random init, splits and sampling.")]
DataOpt = Annotated[str, typer.Option("--data", help="Dataset name: cifar10, cifar100, imagenet, inat2018, inat2021, places365, places205, digits, imagefolder:PATH.")]
DataRootOpt = Annotated[str | None, typer.Option("--data-root", help="Dataset root (default: $JEPA_EVAL_DATA/<standard folder>).")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Download the dataset when torchvision can (CIFAR).")]
ModeOpt = Annotated[str | None, typer.Option("--mode", help="Features: avgpool, avgpool4, cls, cls4, cls+avgpool (default: I-JEPA avgpool, others cls).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Data-loader worker processes.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")]
CacheDirOpt = Annotated[str | None, typer.Option("--cache-dir", help="Feature cache folder (default: $JEPA_EVAL_CACHE or ~/.cache/jepa-eval/features).")]
ResultsOpt = Annotated[Path, typer.Option("--results-dir", help="Where the result JSON file is written.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result record as JSON on stdout instead of a table.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def model_spec(ckpt: str, name: str | None, ckpt_key: str | None, num_heads: int | None,
               weights: str | None, image_size: int | None, trust: bool, seed: int) -> ModelSpec:
    return ModelSpec(ckpt=ckpt, name=name, ckpt_key=ckpt_key, num_heads=num_heads, weights=weights,
                     image_size=image_size, trust_checkpoint=trust, seed=seed)


def extract_options(data_root: str | None, download: bool, batch_size: int, workers: int,
                    device: str, no_cache: bool, cache_dir: str | None, quiet: bool) -> ExtractOptions:
    return ExtractOptions(data_root=data_root, download=download, batch_size=batch_size,
                          num_workers=workers, device=device, cache_dir=cache_dir,
                          use_cache=not no_cache, progress=not quiet)


class Stopwatch:
    """Wall time of a command, in seconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.2f}"
    return str(value)


def metrics_table(record: ResultRecord, title: str) -> Table:
    """One row per metric, one column per coordinate that varies."""
    coord_names: list[str] = []
    for row in record.metrics:
        for key in row:
            if key not in ("name", "value") and key not in coord_names:
                coord_names.append(key)
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for key in coord_names:
        table.add_column(key, justify="right")
    table.add_column("value", justify="right")
    for row in record.metrics:
        table.add_row(row["name"], *[_format(row.get(key, "")) for key in coord_names], _format(row["value"]))
    return table


def finish(record: ResultRecord, results_dir: Path, as_json: bool, title: str) -> Path:
    """Write the record, then print it (a table on stdout, or its JSON with ``--json``)."""
    path = write_record(record, results_dir)
    if as_json:
        stdout.print_json(json.dumps(record.to_json(), default=str))
    else:
        stdout.print(metrics_table(record, title))
        for key, value in record.summary.items():
            stdout.print(f"{key}: {_format(value)}")
        stdout.print(f"result file: {path}")
    return path

