"""``jepa-eval transfer``: one protocol over several datasets, the best feature mode per dataset, models side by side."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated

import typer

from jepa_eval.backbones.spec import parse_model_specs
from jepa_eval.cli import options as c
from jepa_eval.features.splits import resolve_mode


@c.shared_options("extract", "results", "json")
def transfer(ckpt: Annotated[list[str], typer.Option("--ckpt", help="Checkpoint (repeat to compare models); NAME=PATH names it.")],
             datasets: Annotated[str, typer.Option("--datasets", help="Comma-separated dataset names.")] = "digits",
             protocol: Annotated[str, typer.Option("--protocol", help="Protocols that can pick a feature mode, e.g. linear, knn, or linear,knn.")] = "linear",
             features_modes: Annotated[str, typer.Option("--features", help="Feature modes to sweep; the best one is reported per dataset.")] = "avgpool,avgpool4",
             epochs: Annotated[int | None, typer.Option("--epochs", help="Training epochs, for protocols that train.")] = None,
             ckpt_key: c.CkptKeyOpt = None, num_heads: c.HeadsOpt = None, image_size: c.ImageSizeOpt = None,
             trust_checkpoint: c.TrustOpt = False, *, shared: c.Shared) -> None:
    """Run a protocol over several datasets (one extraction each) and compare models side by side."""
    from rich.table import Table

    from jepa_eval.pipeline.transfer import check_transferable, transfer_records
    from jepa_eval.protocols import get_protocol
    from jepa_eval.results.record import write_record

    names = [d.strip() for d in datasets.split(",") if d.strip()]
    modes = [m.strip() for m in features_modes.split(",") if m.strip()]
    protocols = [check_transferable(get_protocol(p.strip(), runs_on="model")) for p in protocol.split(",") if p.strip()]
    table = Table(title="transfer: top-1 % (winning feature mode)", title_justify="left")
    table.add_column("model")
    table.add_column("protocol")
    for dataset in names:
        table.add_column(dataset, justify="right")
    records = []
    for entry in ckpt:
        spec = parse_model_specs([entry], ckpt_key, trust_checkpoint, shared.seed, shared.download)[0]
        spec.num_heads, spec.image_size = num_heads, image_size
        backbone = spec.load()
        c.console.print(f"model: {backbone.describe()}")
        chosen_modes = list(dict.fromkeys(resolve_mode(backbone, m) for m in modes))
        for proto in protocols:
            known = {f.name for f in fields(proto.config)}
            values = {"seed": shared.seed, "epochs": epochs}
            config = proto.config(**{k: v for k, v in values.items() if k in known and v is not None})
            cells = []
            for record in transfer_records(spec, backbone, names, proto, chosen_modes, config, shared.options,
                                           log=c.console.print):
                path_written = write_record(record, shared.results_dir)
                records.append(record)
                top1 = next(m.value for m in record.metrics if m.name == "top1"
                            and all(m.coords.get(k, v) == v for k, v in proto.table_coords.items()))
                cells.append(f"{top1:.2f} ({record.summary['mode']})")
                c.console.print(f"result file: {path_written}")
            table.add_row(spec.display_name(), proto.name, *cells)
    if shared.json_out:
        c.stdout.print_json(data=[r.to_json() for r in records])
    else:
        c.stdout.print(table)
