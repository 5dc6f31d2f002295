"""``jepa-eval suite``, ``report`` and ``demo``: many protocols, many models, one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jepa_eval.cli import options as c
from jepa_eval.cli.app import app
from jepa_eval.results.record import DEFAULT_RESULTS_DIR
from jepa_eval.features.splits import ModelSpec

REPO_PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"


def _suite_path(name: str) -> Path:
    """A suite file path, or the name of a shipped one (``cpu-quick`` -> protocols/cpu-quick.yaml)."""
    path = Path(name)
    if path.exists() or path.suffix:
        return path
    return REPO_PROTOCOLS / f"{name}.yaml"


def parse_models(entries: list[str], ckpt_key: str | None, trust: bool, seed: int) -> list[ModelSpec]:
    """``NAME=PATH`` (or just PATH) values of ``--ckpt``."""
    specs = []
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or any(ch in name for ch in ":/\\"):
            name, path = None, entry
        specs.append(ModelSpec(ckpt=path, name=name, ckpt_key=ckpt_key, trust_checkpoint=trust, seed=seed))
    return specs


@app.command()
@c.shared_options("extract", "results")
def suite(suite_file: Annotated[str, typer.Argument(help="Suite file, or the name of a shipped one (cpu-quick, ijepa-paper).")],
          ckpt: Annotated[list[str], typer.Option("--ckpt", help="NAME=PATH of a model (repeat for several).")],
          force: Annotated[bool, typer.Option("--force", help="Rerun entries that already have a result.")] = False,
          report_dir: Annotated[Path | None, typer.Option("--report", help="Also write tables and plots here.")] = None,
          ckpt_key: c.CkptKeyOpt = None, trust_checkpoint: c.TrustOpt = False,
          debug: Annotated[bool, typer.Option("--debug", help="Stop at the first failure with a traceback.")] = False,
          *, shared: c.Shared) -> None:
    """Run every protocol of a suite for every model; skip what already has a result."""
    from jepa_eval.pipeline.suite import load_suite, run_suite

    loaded = load_suite(_suite_path(suite_file))
    models = parse_models(ckpt, ckpt_key, trust_checkpoint, shared.seed)
    results_dir = shared.results_dir
    c.console.print(f"suite {loaded.name}: {len(loaded.entries)} protocols x {len(models)} models -> {results_dir}")
    outcome = run_suite(loaded, models, shared.options, results_dir, force=force, debug=debug, log=c.console.print)
    c.stdout.print(f"{len(outcome.written)} results written, {len(outcome.skipped)} skipped, {len(outcome.failed)} failed")
    if report_dir is not None:
        _report(results_dir, report_dir, suite_file=loaded.path, with_published=False)
    for label, reason in outcome.failed:
        c.stdout.print(f"[red]failed[/] {label}: {reason}", highlight=False)
    if outcome.failed:
        raise typer.Exit(1)


def _report(results_dir: Path, out_dir: Path, *, suite_file: Path | None, with_published: bool,
            models: list[str] | None = None, datasets: list[str] | None = None) -> list[Path]:
    from jepa_eval.report.tables import write_report
    from jepa_eval.pipeline.suite import load_suite

    suite_name = load_suite(suite_file).name if suite_file else None
    written = write_report(results_dir, out_dir, suite=suite_name, with_published=with_published,
                           models=models or None, datasets=datasets or None)
    for path in written:
        c.stdout.print(f"wrote {path}")
    return written


@app.command()
def report(results_dir: Annotated[Path, typer.Argument(help="Folder of result JSON files.")] = DEFAULT_RESULTS_DIR,
           out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: RESULTS_DIR/report).")] = None,
           suite_file: Annotated[str | None, typer.Option("--suite", help="Limit to the protocols of this suite.")] = None,
           model: Annotated[list[str] | None, typer.Option("--model", help="Only these models (rows); repeat for several.")] = None,
           dataset: Annotated[list[str] | None, typer.Option("--dataset", help="Only these datasets (columns); repeat for several.")] = None,
           published: Annotated[bool, typer.Option("--published", help="Add the published numbers as a reference block.")] = False) -> None:
    """Tidy CSV/Parquet of all results, paper tables (Markdown, LaTeX) and plots."""
    _report(results_dir, out or results_dir / "report", suite_file=_suite_path(suite_file) if suite_file else None,
            with_published=published, models=model, datasets=dataset)


@app.command()
def demo(out: Annotated[Path, typer.Option("--out", help="Where the demo's run, results, tables and plots go.")] = Path("results/demo"),
         config: Annotated[Path | None, typer.Option("--config", help="Trainer config (default: configs/digits_demo.yaml).")] = None,
         suite_file: Annotated[str, typer.Option("--suite", help="Suite to evaluate with.")] = "cpu-quick",
         quiet: c.QuietOpt = False) -> None:
    """Train a small I-JEPA on the embedded digits set, evaluate it and a random encoder of the same shape."""
    from jepa_eval.pipeline.demo import run_demo

    written = run_demo(out, config_path=config, suite_name=str(_suite_path(suite_file)), progress=not quiet,
                       log=c.console.print)
    c.stdout.print(f"demo finished: tables and plots in {out}")
    for path in written:
        c.stdout.print(f"  {path}")

