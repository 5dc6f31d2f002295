"""The ``ijepa`` command line: ``ijepa train --config FILE [--dry-run] [--device ...]``.

Run several processes with ``torchrun --nproc_per_node N -m ijepa train --config FILE``.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
import yaml
from rich.console import Console

from ijepa.config import load_config, shipped_configs
from jepa_eval.core.errors import JepaEvalError, run_main

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Train I-JEPA models (official config schema plus a `run` section).")
console = Console(stderr=True)
_DEBUG = {"on": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks.")] = False) -> None:
    _DEBUG["on"] = debug


@app.command()
def train(
    config: Annotated[str, typer.Option("--config", help="YAML config (official I-JEPA schema + run section), or a shipped config's name: " + ", ".join(shipped_configs()) + ".")],
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override one key, section.key=value (value read as YAML); repeat for several.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the resolved config; do not train.")] = False,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (default: run.device).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Train, or resume with meta.load_checkpoint: true."""
    cfg = load_config(config, overrides or [])
    if device not in (None, "auto", "cpu", "cuda"):
        raise JepaEvalError(f"unknown --device {device!r}", expected="auto, cpu or cuda")
    if dry_run:
        typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)
        return
    from ijepa.train import train as run_training

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run_training(cfg, device=device, progress=not quiet)
    if result.latest is not None:
        console.print(f"done: {result.epochs} epochs, {result.steps} steps; checkpoint {result.latest}")


def main() -> None:
    """Console entry point: user errors become one paragraph and exit code 2; SIGINT/SIGTERM stop
    cleanly (exit 130/143) and say what was saved."""
    run_main(app, console, debug=lambda: _DEBUG["on"],
             saved="checkpoints already written are complete; resume with meta.load_checkpoint: true")


if __name__ == "__main__":
    main()
