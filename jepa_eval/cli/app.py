"""The ``jepa-eval`` command line: one command per protocol, each leaving one result file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from jepa_eval.cli import options as c
from jepa_eval.core.errors import JepaEvalError, run_main
from jepa_eval.results.record import ResultRecord
from jepa_eval.features.cache import FeatureCache, default_cache_root
from jepa_eval.pipeline import evaluate as jobs
from jepa_eval.features.splits import check_mode, split_features
from jepa_eval.pipeline.transfer import REFERENCE_K

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Evaluate self-supervised ViT checkpoints (I-JEPA, MAE, DINO, DINOv2, timm).")
cache_app = typer.Typer(no_args_is_help=True, help="List or clear the feature cache.")
app.add_typer(cache_app, name="cache")

_DEBUG = {"on": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks.")] = False) -> None:
    _DEBUG["on"] = debug


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


@app.command()
@c.shared_options("model", "extract", "mode", "results", "json")
def knn(ckpt: c.CkptOpt, data: c.DataOpt = "digits", k: Annotated[str, typer.Option("--k", help="Comma-separated k values, one search.")] = "10,20,100,200",
        temperature: Annotated[float, typer.Option("--temperature", help="Vote weight exp(sim/T).")] = 0.07,
        *, shared: c.Shared) -> None:
    """Weighted k-NN (DINO's rule, FAISS exact search) on frozen features: top-1/top-5 for every k."""
    from jepa_eval.protocols.knn import KNNConfig

    config = KNNConfig(ks=tuple(_ints(k)), temperature=temperature)
    _evaluate(ckpt, data, shared, lambda *run: jobs.run_knn(*run, config),
              lambda record, mode: f"k-NN on {data} ({mode})")


@app.command()
@c.shared_options("model", "extract", "mode", "results", "json")
def linear(ckpt: c.CkptOpt, data: c.DataOpt = "digits",
           lrs: Annotated[str | None, typer.Option("--lrs", help="Comma-separated base learning rates (default: the protocol's grid).")] = None,
           wds: Annotated[str, typer.Option("--wds", help="Comma-separated weight decays.")] = "0,5e-4",
           batchnorm: Annotated[str, typer.Option("--batchnorm", help="Head variants: plain, bn, or both.")] = "both",
           epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs over the cached features.")] = None,
           val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of train held out to choose the head.")] = 0.1,
           select_on_eval: Annotated[bool, typer.Option("--select-on-eval", help="Choose the head on the evaluation split (DINOv2's behaviour; recorded).")] = False,
           *, shared: c.Shared) -> None:
    """A grid of linear heads trained at once on cached features; the head is chosen on held-out train."""
    config = linear_config(lrs, wds, batchnorm, epochs, val_fraction, select_on_eval, shared.seed)
    _evaluate(ckpt, data, shared,
              lambda *run: jobs.run_linear(*run, config, device=shared.device, progress=not shared.quiet),
              lambda record, mode: f"linear probe on {data} ({mode}), head chosen on {record.params['selected_on']}")


def linear_config(lrs: str | None, wds: str, batchnorm: str, epochs: int | None,
                  val_fraction: float, select_on_eval: bool, seed: int):
    """A :class:`LinearConfig` from the command-line spellings of its grid."""
    from jepa_eval.protocols.linear import LinearConfig

    variants = {"plain": (False,), "bn": (True,), "both": (False, True)}
    if batchnorm not in variants:
        raise JepaEvalError(f"unknown --batchnorm value {batchnorm!r}", expected="plain, bn or both")
    kwargs = {"weight_decays": tuple(_floats(wds)), "batchnorm": variants[batchnorm],
              "val_fraction": val_fraction, "seed": seed, "select_on": "eval" if select_on_eval else "val"}
    if lrs:
        kwargs["learning_rates"] = tuple(_floats(lrs))
    if epochs is not None:
        kwargs["epochs"] = epochs
    return LinearConfig(**kwargs)


def _evaluate(ckpt: str, data: str, shared: c.Shared, run: Callable[..., ResultRecord],
              title: Callable[[ResultRecord, str], str]) -> None:
    """Load, extract the train and evaluation splits, ``run(spec, backbone, train, test, mode)``,
    then write and print the record."""
    watch = c.Stopwatch()
    spec = shared.spec(ckpt)
    backbone, mode = _load(spec, shared.mode)
    train, test = jobs.train_eval_features(backbone, data, mode, shared.options, log=c.console.print)
    record = run(spec, backbone, train, test, mode)
    record.wall_time_s = watch.seconds
    c.finish(record, shared.results_dir, shared.json_out, title(record, mode))


def _load(spec, mode: str | None):
    backbone = spec.load()
    c.console.print(f"model: {backbone.describe()}")
    return backbone, check_mode(backbone, mode)


@app.command()
@c.shared_options("model", "extract", "mode", "results", "json")
def lowshot(ckpt: c.CkptOpt, data: c.DataOpt = "digits",
            fraction: Annotated[str | None, typer.Option("--fraction", help="Comma-separated label fractions per class, e.g. 0.01,0.1.")] = None,
            shots: Annotated[str | None, typer.Option("--shots", help="Comma-separated images per class, e.g. 1,2,5,10.")] = None,
            subset_file: Annotated[Path | None, typer.Option("--subset-file", help="A published subset file (one <wnid>_<id>.JPEG a line), e.g. ImageNet 1percent.txt.")] = None,
            seeds: Annotated[int, typer.Option("--seeds", help="Seeds per setting (sampling + validation split).")] = 5,
            *, shared: c.Shared) -> None:
    """Low-shot logistic regression (L-BFGS, C chosen on held-out low-shot train) over seeds: mean ± std."""
    from jepa_eval.protocols.lowshot import LowShotConfig

    if not (fraction or shots or subset_file):
        fraction = "0.01"
    config = LowShotConfig(fractions=tuple(_floats(fraction or "")), shots=tuple(_ints(shots or "")), seeds=seeds)
    subset = jobs.subset_from_file(data, str(subset_file), shared.options) if subset_file else None
    _evaluate(ckpt, data, shared,
              lambda *run: jobs.run_lowshot(*run, config, subset_indices=subset,
                                            subset_file=str(subset_file) if subset_file else None,
                                            device=shared.device, progress=not shared.quiet),
              lambda record, mode: f"low-shot logistic regression on {data} ({mode})")


@app.command()
@c.shared_options("model", "extract", "mode", "results", "json")
def rank(ckpt: c.CkptOpt, data: c.DataOpt = "digits",
         split: Annotated[str | None, typer.Option("--split", help="Split to measure (default: the training split).")] = None,
         samples: Annotated[int, typer.Option("--samples", help="Seeded rows used for the metrics.")] = 10_000,
         lidar: Annotated[bool, typer.Option("--lidar/--no-lidar", help="Also compute LiDAR (needs extra forward passes over augmented views).")] = True,
         lidar_images: Annotated[int, typer.Option("--lidar-images", help="LiDAR surrogate classes n.")] = 1000,
         lidar_views: Annotated[int, typer.Option("--lidar-views", help="LiDAR views per class q.")] = 10,
         *, shared: c.Shared) -> None:
    """Label-free collapse diagnostics: RankMe, alpha-ReQ, LiDAR, feature std, mean cosine, uniformity."""
    watch = c.Stopwatch()
    spec, options = shared.spec(ckpt), shared.options
    config = jobs.RankConfig(samples=samples, seed=shared.seed, lidar_images=lidar_images, lidar_views=lidar_views, lidar=lidar)
    backbone, chosen = _load(spec, shared.mode)
    record = jobs.rank_record(spec, backbone, data, split, chosen, config, options, log=c.console.print)
    record.wall_time_s = watch.seconds
    c.finish(record, shared.results_dir, shared.json_out, f"rank diagnostics on {data}/{record.dataset['split']} ({chosen})")


@app.command()
@c.shared_options("extract", "results", "json")
def transfer(ckpt: Annotated[list[str], typer.Option("--ckpt", help="Checkpoint (repeat to compare models); NAME=PATH names it.")],
             datasets: Annotated[str, typer.Option("--datasets", help="Comma-separated dataset names.")] = "digits",
             protocol: Annotated[str, typer.Option("--protocol", help="linear, knn, or linear,knn.")] = "linear",
             features_modes: Annotated[str, typer.Option("--features", help="Feature modes to sweep; the best one is reported per dataset.")] = "avgpool,avgpool4",
             epochs: Annotated[int | None, typer.Option("--epochs", help="Linear-probe epochs.")] = None,
             ckpt_key: c.CkptKeyOpt = None, num_heads: c.HeadsOpt = None, image_size: c.ImageSizeOpt = None,
             trust_checkpoint: c.TrustOpt = False, *, shared: c.Shared) -> None:
    """Run a protocol over several datasets (one extraction each) and compare models side by side."""
    from rich.table import Table

    from jepa_eval.protocols.knn import KNNConfig
    from jepa_eval.results.record import write_record
    from jepa_eval.pipeline.transfer import transfer_records

    options = shared.options
    names = [d.strip() for d in datasets.split(",") if d.strip()]
    modes = [m.strip() for m in features_modes.split(",") if m.strip()]
    table = Table(title="transfer: top-1 % (winning feature mode)", title_justify="left")
    table.add_column("model")
    table.add_column("protocol")
    for dataset in names:
        table.add_column(dataset, justify="right")
    records = []
    for entry in ckpt:
        spec = cli_suite.parse_models([entry], ckpt_key, trust_checkpoint, shared.seed)[0]
        spec.num_heads, spec.image_size = num_heads, image_size
        backbone = spec.load()
        c.console.print(f"model: {backbone.describe()}")
        for proto in [p.strip() for p in protocol.split(",") if p.strip()]:
            if proto not in ("linear", "knn"):
                raise JepaEvalError(f"unknown transfer protocol {proto!r}", expected="linear or knn")
            config = (linear_config(None, "0,5e-4", "both", epochs, 0.1, False, shared.seed) if proto == "linear"
                      else KNNConfig())
            watch = c.Stopwatch()
            rows = transfer_records(spec, backbone, names, proto, list(dict.fromkeys(check_mode(backbone, m) for m in modes)),
                                    config, options, log=c.console.print)
            cells = []
            for record in rows:
                record.wall_time_s = watch.seconds
                path_written = write_record(record, shared.results_dir)
                records.append(record)
                top1 = next(m["value"] for m in record.metrics if m["name"] == "top1" and m.get("k", REFERENCE_K) == REFERENCE_K)
                cells.append(f"{top1:.2f} ({record.summary['mode']})")
                c.console.print(f"result file: {path_written}")
            table.add_row(spec.display_name(), proto, *cells)
    if shared.json_out:
        c.stdout.print_json(data=[r.to_json() for r in records])
    else:
        c.stdout.print(table)


@app.command()
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


@app.command()
@c.shared_options("model", "extract", "mode")
def features(ckpt: c.CkptOpt, out: Annotated[Path, typer.Option("--out", help="Output FILE.npy (labels go to FILE.labels.npy).")],
             data: c.DataOpt = "digits", split: Annotated[str | None, typer.Option("--split", help="Split (default: the evaluation split).")] = None,
             *, shared: c.Shared) -> None:
    """Export features (rows in the dataset's order) and labels as .npy files for other tools."""
    from jepa_eval.data import get_spec

    spec, options = shared.spec(ckpt), shared.options
    backbone, chosen = _load(spec, shared.mode)
    split_name = split or get_spec(data).eval_split
    result = split_features(backbone, data, split_name, chosen, options)
    jobs.leave_unless_rank0()
    where = "reused from the feature cache" if result.cache_hit else "extracted"
    c.console.print(f"features {data}/{split_name}: {where}")
    written = result.features.save(out)
    c.stdout.print(f"wrote {result.size} x {result.features.features.shape[1]} features: {', '.join(map(str, written))}")


@cache_app.command("list")
def cache_list(cache_dir: c.CacheDirOpt = None) -> None:
    """Show every cache entry: what it holds and its size."""
    from rich.table import Table

    cache = FeatureCache(Path(cache_dir) if cache_dir else default_cache_root())
    table = Table(title=f"feature cache {cache.root}", title_justify="left")
    for column in ("key", "dataset", "split", "mode", "rows", "dim", "MB", "created"):
        table.add_column(column)
    entries = cache.entries()
    for e in entries:
        table.add_row(e.key[:12], str(e.parts.get("dataset")), str(e.parts.get("split")), str(e.parts.get("mode")),
                      str(e.rows), str(e.dim), f"{e.bytes / 1e6:.1f}", str(e.created))
    c.stdout.print(table)
    c.stdout.print(f"{len(entries)} entries")


@cache_app.command("clear")
def cache_clear(cache_dir: c.CacheDirOpt = None,
                dataset: Annotated[str | None, typer.Option("--dataset", help="Only entries of this dataset.")] = None) -> None:
    """Delete cache entries (all, or those of one dataset)."""
    cache = FeatureCache(Path(cache_dir) if cache_dir else default_cache_root())
    removed = cache.clear({"dataset": dataset} if dataset else None)
    c.stdout.print(f"removed {removed} cache entries from {cache.root}")


from jepa_eval.cli import suite as cli_suite  # noqa: E402,F401  (registers suite, report and demo on ``app``)


def main() -> None:
    """Console entry point: user errors become one paragraph and exit code 2; SIGINT/SIGTERM stop
    cleanly (exit 130/143) and say what was saved."""
    run_main(app, c.console, debug=lambda: _DEBUG["on"],
             saved="result files and cache entries already written are complete; nothing partial was kept")


if __name__ == "__main__":
    main()
