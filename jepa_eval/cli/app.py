"""The ``jepa-eval`` application: every command registered on one Typer app, and the entry point.

``jepa-eval``, ``python -m jepa_eval`` and ``torchrun -m jepa_eval`` all run :func:`main`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from jepa_eval.cli import cache, demo, features, monitor, protocols, signals, suite, transfer
from jepa_eval.cli.options import console
from jepa_eval.core.errors import run_main

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Evaluate self-supervised ViT checkpoints (I-JEPA, MAE, DINO, DINOv2, timm).")
_DEBUG = {"on": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks.")] = False) -> None:
    _DEBUG["on"] = debug


for command in (*protocols.commands(), transfer.transfer, monitor.monitor_command(), signals.signals_command(),
                features.features,
                suite.suite, suite.report, demo.demo):
    app.command()(command)
app.add_typer(cache.app, name="cache")


def main() -> None:
    """Console entry point: user errors become one paragraph and exit code 2; SIGINT/SIGTERM stop
    cleanly (exit 130/143) and say what was saved."""
    run_main(app, console, debug=lambda: _DEBUG["on"],
             saved="result files and cache entries already written are complete; nothing partial was kept")
