"""One command per protocol (knn, linear, lowshot, rank): load, extract (cached), evaluate, write one record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from jepa_eval.cli import options as c
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.features.splits import check_mode
from jepa_eval.pipeline import evaluate as jobs
from jepa_eval.results.record import ResultRecord


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


@c.shared_options("model", "extract", "mode", "results", "json")
def knn(ckpt: c.CkptOpt, data: c.DataOpt = "digits", k: Annotated[str, typer.Option("--k", help="Comma-separated k values, one search.")] = "10,20,100,200",
        temperature: Annotated[float, typer.Option("--temperature", help="Vote weight exp(sim/T).")] = 0.07,
        *, shared: c.Shared) -> None:
    """Weighted k-NN (DINO's rule, FAISS exact search) on frozen features: top-1/top-5 for every k."""
    from jepa_eval.protocols.knn import KNNConfig

    config = KNNConfig(ks=tuple(_ints(k)), temperature=temperature)
    _evaluate(ckpt, data, shared, lambda *run: jobs.run_knn(*run, config),
              lambda record, mode: f"k-NN on {data} ({mode})")


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
