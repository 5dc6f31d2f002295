"""``jepa-eval cache list`` / ``cache clear``: inspect or empty the feature cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jepa_eval.cli import options as c
from jepa_eval.features.cache import FeatureCache, default_cache_root

app = typer.Typer(no_args_is_help=True, help="List or clear the feature cache.")


@app.command("list")
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


@app.command("clear")
def cache_clear(cache_dir: c.CacheDirOpt = None,
                dataset: Annotated[str | None, typer.Option("--dataset", help="Only entries of this dataset.")] = None) -> None:
    """Delete cache entries (all, or those of one dataset)."""
    cache = FeatureCache(Path(cache_dir) if cache_dir else default_cache_root())
    removed = cache.clear({"dataset": dataset} if dataset else None)
    c.stdout.print(f"removed {removed} cache entries from {cache.root}")
