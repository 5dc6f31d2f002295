"""``jepa-eval suite`` and ``report``: many protocols, many models, one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jepa_eval.backbones.spec import parse_model_specs
from jepa_eval.cli import options as c
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.results.record import DEFAULT_RESULTS_DIR


@c.shared_options("extract", "results")
def suite(suite_file: Annotated[str | None, typer.Argument(help="Suite file, or the name of a shipped one (see --list).")] = None,
          ckpt: Annotated[list[str] | None, typer.Option("--ckpt", help="NAME=PATH of a model (repeat for several).")] = None,
          list_suites: Annotated[bool, typer.Option("--list", help="List the shipped suites and exit.")] = False,
          force: Annotated[bool, typer.Option("--force", help="Rerun entries that already have a result.")] = False,
          report_dir: Annotated[Path | None, typer.Option("--report", help="Also write tables and plots here.")] = None,
          ckpt_key: c.CkptKeyOpt = None, trust_checkpoint: c.TrustOpt = False,
          debug: Annotated[bool, typer.Option("--debug", help="Stop at the first failure with a traceback.")] = False,
          *, shared: c.Shared) -> None:
    """Run every protocol of a suite for every model; skip what already has a result."""
    from jepa_eval.pipeline.suite import load_suite, resolve_suite, run_suite, shipped_suites

    if list_suites:
        for name in shipped_suites():
            shipped = load_suite(resolve_suite(name))
            c.stdout.print(f"{name}: {len(shipped.entries)} protocols. {' '.join(shipped.description.split())}",
                           highlight=False, soft_wrap=True)
        return
    if suite_file is None or not ckpt:
        raise JepaEvalError("jepa-eval suite needs a suite and at least one model",
                            expected="jepa-eval suite SUITE --ckpt NAME=PATH [--ckpt ...]",
                            found=f"suite {suite_file!r}, {len(ckpt or [])} --ckpt",
                            hint="jepa-eval suite --list shows the shipped suites")
    loaded = load_suite(resolve_suite(suite_file))
    models = parse_model_specs(ckpt, ckpt_key, trust_checkpoint, shared.seed, shared.download)
    results_dir = shared.results_dir
    c.console.print(f"suite {loaded.name}: {len(loaded.entries)} protocols x {len(models)} models -> {results_dir}")
    outcome = run_suite(loaded, models, shared.options, results_dir, force=force, debug=debug,
                        log=lambda line: c.console.print(line, markup=False, highlight=False))  # top1[shots=1]
    c.stdout.print(f"{len(outcome.written)} results written, {len(outcome.skipped)} skipped, {len(outcome.failed)} failed")
    if report_dir is not None:
        write_report_files(results_dir, report_dir, suite_name=loaded.name, with_published=False)
    for label, reason in outcome.failed:
        c.stdout.print(f"[red]failed[/] {label}: {reason}", highlight=False)
    if outcome.failed:
        raise typer.Exit(1)


def write_report_files(results_dir: Path, out_dir: Path, *, suite_name: str | None, with_published: bool,
                       models: list[str] | None = None, datasets: list[str] | None = None) -> list[Path]:
    """Write the report of ``results_dir`` into ``out_dir`` and print each path."""
    from jepa_eval.report.build import write_report

    written = write_report(results_dir, out_dir, suite=suite_name, with_published=with_published,
                           models=models or None, datasets=datasets or None)
    for path in written:
        c.stdout.print(f"wrote {path}")
    return written


def report(results_dir: Annotated[Path, typer.Argument(help="Folder of result JSON files.")] = DEFAULT_RESULTS_DIR,
           out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: RESULTS_DIR/report).")] = None,
           suite_file: Annotated[str | None, typer.Option("--suite", help="Limit to the protocols of this suite.")] = None,
           model: Annotated[list[str] | None, typer.Option("--model", help="Only these models (rows); repeat for several.")] = None,
           dataset: Annotated[list[str] | None, typer.Option("--dataset", help="Only these datasets (columns); repeat for several.")] = None,
           published: Annotated[bool, typer.Option("--published", help="Add the published numbers as a reference block.")] = False) -> None:
    """Tidy CSV/Parquet of all results, paper tables (Markdown, LaTeX) and plots."""
    from jepa_eval.pipeline.suite import load_suite, resolve_suite

    suite_name = load_suite(resolve_suite(suite_file)).name if suite_file else None
    write_report_files(results_dir, out or results_dir / "report", suite_name=suite_name,
                       with_published=published, models=model, datasets=dataset)
