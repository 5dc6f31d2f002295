"""``jepa-eval features``: export features and labels as .npy files for other tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jepa_eval.cli import options as c
from jepa_eval.features.splits import resolve_mode, split_features
from jepa_eval.core.devices import rank


@c.shared_options("model", "extract", "mode")
def features(ckpt: c.CkptOpt, out: Annotated[Path, typer.Option("--out", help="Output FILE.npy (labels go to FILE.labels.npy).")],
             data: c.DataOpt = "digits", split: Annotated[str | None, typer.Option("--split", help="Split (default: the evaluation split).")] = None,
             *, shared: c.Shared) -> None:
    """Export features (rows in the dataset's order) and labels as .npy files for other tools."""
    from jepa_eval.data import get_spec

    spec, options = shared.spec(ckpt), shared.options
    backbone = spec.load()
    c.console.print(f"model: {backbone.describe()}")
    chosen = resolve_mode(backbone, shared.mode)
    split_name = split or get_spec(data).eval_split
    result = split_features(backbone, data, split_name, chosen, options)
    if rank() != 0:
        return  # torchrun's helper ranks: rank 0 writes the gathered features
    where = "reused from the feature cache" if result.cache_hit else "extracted"
    c.console.print(f"features {data}/{split_name}: {where}")
    written = result.features.save(out)
    c.stdout.print(f"wrote {result.size} x {result.features.features.shape[1]} features: {', '.join(map(str, written))}")
