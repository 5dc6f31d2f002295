"""Options shared by the ``jepa-eval`` commands, and the printing of results."""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from jepa_eval.results.record import DEFAULT_RESULTS_DIR, ResultRecord, write_record
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.data.registry import dataset_prefixes, list_datasets
from jepa_eval.features.modes import FEATURE_MODES
from jepa_eval.features.splits import ExtractOptions

console = Console(stderr=True)
stdout = Console()

CkptOpt = Annotated[str, typer.Option("--ckpt", help="Checkpoint file (.pth, .safetensors), hf:ORG/NAME[@REVISION], hf-hub:ORG/NAME, timm:MODEL_NAME (random init unless --weights) or timm:MODEL_NAME.TAG (its pretrained weights), random:PATH, pixels:SIZE.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Model name in results (default: file name).")]
CkptKeyOpt = Annotated[str | None, typer.Option("--ckpt-key", help="State dict inside the file: target_encoder (I-JEPA default), encoder, teacher, student, model.")]
HeadsOpt = Annotated[int | None, typer.Option("--num-heads", help="Attention heads, when the width is not a standard one.")]
WeightsOpt = Annotated[str | None, typer.Option("--weights", help="State dict for a timm:MODEL_NAME backbone.")]
ImageSizeOpt = Annotated[int | None, typer.Option("--image-size", help="Input size in pixels (default: the checkpoint's).")]
TrustOpt = Annotated[bool, typer.Option("--trust-checkpoint", help="Allow arbitrary pickled objects in the checkpoint (runs code from the file!).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for random init, splits and sampling.")]
DataOpt = Annotated[str, typer.Option("--data", help="Dataset name: " + ", ".join(list_datasets() + dataset_prefixes()) + ".")]
DataRootOpt = Annotated[str | None, typer.Option("--data-root", help="Dataset root (default: $JEPA_EVAL_DATA/<standard folder>).")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Allow the network: download a missing dataset (when torchvision can) or a hub model missing from the local cache.")]
ModeOpt = Annotated[str | None, typer.Option("--mode", help="Features: " + ", ".join(m for m in FEATURE_MODES if m != "pixels") + " (default: the checkpoint family's, e.g. I-JEPA avgpool, DINO cls).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Data-loader worker processes that decode images (default: the cores this process may use, at most 8; 0 for in-memory or tiny datasets).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")]
CacheDirOpt = Annotated[str | None, typer.Option("--cache-dir", help="Feature cache folder (default: $JEPA_EVAL_CACHE or ~/.cache/jepa-eval/features).")]
ResultsOpt = Annotated[Path, typer.Option("--results-dir", help="Where the result JSON file is written.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result record as JSON on stdout instead of a table.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


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
        coord_names += [key for key in row.coords if key not in coord_names]
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for key in coord_names:
        table.add_column(key, justify="right")
    table.add_column("value", justify="right")
    for row in record.metrics:
        table.add_row(row.name, *[_format(row.coords.get(key, "")) for key in coord_names], _format(row.value))
    return table


def finish(record: ResultRecord, results_dir: Path, as_json: bool, title: str) -> Path:
    """Write the record, then print it (a table on stdout, or its JSON with ``--json``)."""
    path = write_record(record, results_dir)
    if as_json:
        stdout.print_json(json.dumps(record.to_json(), default=str))
    else:
        stdout.print(metrics_table(record, title))
        for key, value in record.summary.items():  # keys such as top1[shots=1]: not rich markup
            stdout.print(f"{key}: {_format(value)}", markup=False, highlight=False)
        stdout.print(f"result file: {path}")
    return path


# Option groups shared by commands: (parameter name, annotated type, default).
OPTION_GROUPS: dict[str, list[tuple[str, Any, Any]]] = {
    "model": [("name", NameOpt, None), ("ckpt_key", CkptKeyOpt, None), ("num_heads", HeadsOpt, None),
              ("weights", WeightsOpt, None), ("image_size", ImageSizeOpt, None),
              ("trust_checkpoint", TrustOpt, False)],
    "extract": [("seed", SeedOpt, 0), ("data_root", DataRootOpt, None), ("download", DownloadOpt, False),
                ("batch_size", BatchOpt, 64), ("workers", WorkersOpt, None),
                ("device", DeviceOpt, "auto"), ("no_cache", NoCacheOpt, False), ("cache_dir", CacheDirOpt, None),
                ("quiet", QuietOpt, False)],
    "mode": [("mode", ModeOpt, None)],
    "results": [("results_dir", ResultsOpt, DEFAULT_RESULTS_DIR)],
    "json": [("json_out", JsonOpt, False)],
}


@dataclass
class Shared:
    """The values of a command's shared options, with the objects built from them."""

    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError as exc:
            raise AttributeError(name) from exc

    def spec(self, ckpt: str) -> ModelSpec:
        v = self.values
        return ModelSpec(ckpt=ckpt, name=v.get("name"), ckpt_key=v.get("ckpt_key"), num_heads=v.get("num_heads"),
                         weights=v.get("weights"), image_size=v.get("image_size"),
                         trust_checkpoint=v.get("trust_checkpoint", False), seed=v.get("seed", 0),
                         download=v.get("download", False))

    @property
    def options(self) -> ExtractOptions:
        v = self.values
        return ExtractOptions(data_root=v["data_root"], download=v["download"], batch_size=v["batch_size"],
                              num_workers=v["workers"], device=v["device"], cache_dir=v["cache_dir"],
                              use_cache=not v["no_cache"], progress=not v["quiet"])


def shared_options(*groups: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of ``groups`` to a command; it receives them as ``shared: Shared``.

    One definition of each option for every command, instead of a copy per command.
    """
    params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
              for group in groups for name, annotation, default in OPTION_GROUPS[group]]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "shared"]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {p.name: kwargs.pop(p.name) for p in params}
            return command(**kwargs, shared=Shared(values))

        wrapper.__signature__ = signature.replace(parameters=own + params)  # type: ignore[attr-defined]
        return wrapper

    return decorate
