"""``jepa-eval transfer``: one protocol over several datasets, the best feature mode per dataset, models side by side."""

from __future__ import annotations

from typing import Annotated

import typer

from jepa_eval.cli import options as c
from jepa_eval.cli.protocols import linear_config
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.features.splits import check_mode
from jepa_eval.pipeline.transfer import REFERENCE_K


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
        spec = c.parse_models([entry], ckpt_key, trust_checkpoint, shared.seed)[0]
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
