"""Figures drawn from the tidy frame of :mod:`jepa_eval.report.tables`.

Every figure is saved as ``STEM.png`` (150 dpi), ``STEM.pdf`` and ``STEM.csv``, the table it
was drawn from, all written atomically. Figures use matplotlib's Agg canvas directly (no
pyplot), so drawing never touches a display or the caller's global matplotlib state.
Accuracies are percentages; shaded bands and error bars are ± one sample std over seeds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from jepa_eval.core.atomic import atomic_path, atomic_write_text
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols import get_protocol, list_protocols
from jepa_eval.protocols.registry import Protocol
from jepa_eval.report.select import protocol_label, select_rows, table_defaults, variant_labels
from jepa_eval.report.tables import PERCENT_METRICS, column_label, paper_table, table_to_frame

DPI = 150
METRIC_LABELS = {"top1": "top-1 accuracy (%)", "top5": "top-5 accuracy (%)", "rankme": "RankMe",
                 "lidar": "LiDAR", "alpha_req": "α-ReQ (α)", "knn_top1": "k-NN top-1 (%)",
                 "feature_std": "feature std", "rankme_norm": "RankMe / min(N, D)",
                 "train_loss": "training loss"}
#: Fewest checkpoints of one feature size that a Spearman rho is computed over.
MIN_RANKED = 3


def _figure(panels: int, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list[Any]]:
    """A figure of ``panels`` side-by-side axes (wrapping after 3) on an Agg canvas."""
    cols = 2 if panels == 4 else min(panels, 3)
    rows = -(-panels // cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for extra in axes[panels:]:
        extra.set_visible(False)
    return fig, axes[:panels]


def save_figure(fig: Figure, data: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Save ``fig`` as STEM.png and STEM.pdf (tight layout) and ``data`` as STEM.csv."""
    stem = Path(stem)
    fig.tight_layout()
    paths = []
    for ext in ("png", "pdf"):
        path = stem.parent / f"{stem.name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=DPI, bbox_inches="tight")
        paths.append(path)
    paths.append(atomic_write_text(stem.parent / f"{stem.name}.csv", data.to_csv(index=False)))
    return paths


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, f"{metric} (%)" if metric in PERCENT_METRICS else metric)


def _data_ticks(ax: Any, values: pd.Series) -> None:
    """Ticks at the values drawn, on a log axis when they span a factor of 10 or more."""
    ticks = sorted(float(v) for v in values.unique())
    if ticks[-1] >= 10 * ticks[0] > 0:
        ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()


def _seed_stats(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean, sample std (0 for one seed) and count of ``value`` per ``keys``."""
    stats = rows.groupby(keys, dropna=False)["value"].agg(["mean", "std", "count"]).reset_index()
    return stats.assign(std=stats["std"].fillna(0.0)).rename(columns={"count": "n"})


def _fixed_coords(protocol: str, select: Mapping[str, Any] | None) -> str:
    """' (k = 20)': the coordinates a protocol's tables fix, as selected."""
    fixed = {k: (select or {}).get(k, v) for k, v in get_protocol(protocol).table_coords.items()}
    shown = [f"{k} = {', '.join(map(str, v)) if isinstance(v, (list, tuple, set)) else v}" for k, v in fixed.items()]
    return f" ({'; '.join(shown)})" if shown else ""


def plot_grouped_bars(frame: pd.DataFrame, stem: str | Path, *, protocol: str, metric: str = "top1",
                      select: Mapping[str, Any] | None = None) -> list[Path]:
    """Bars of ``metric`` per dataset (groups) and model (bars), ± std over seeds.

    Uses :func:`jepa_eval.report.tables.paper_table`, so the selection (k = 20, chosen linear head,
    one group per low-shot setting) is the tables' one.
    """
    table = paper_table(frame, protocol=protocol, metric=metric, columns=("dataset",), select=select)
    data = table_to_frame(table)
    group_width = max(1.1, 0.4 * len(table.rows))
    fig, (ax,) = _figure(1, width=max(5.0, 2.5 + group_width * len(table.columns)))
    width = 0.8 / len(table.rows)
    x = np.arange(len(table.columns))
    for i, row in enumerate(table.rows):
        cells = [table.cells.get((row, c)) for c in table.columns]
        means = [c.mean if c else np.nan for c in cells]
        stds = [c.std if c and not np.isnan(c.std) else 0.0 for c in cells]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), means, width, label=row,
                      yerr=stds if any(stds) else None, capsize=3)
        ax.bar_label(bars, fmt="%.1f" if metric in PERCENT_METRICS else "%.3g", fontsize=7, padding=2)
    ax.set_xticks(x, [column_label(c, table.column_fields).replace(" ", "\n", 1) for c in table.columns])
    ax.set_ylabel(_metric_label(metric))
    ax.set_xlabel("dataset" + (" and setting" if any(len(c) > 1 and c[-1] for c in table.columns) else ""))
    if metric in PERCENT_METRICS:
        ax.set_ylim(0, min(105.0, max(np.nanmax(data["mean"]) * 1.15, 10.0)))
    ax.set_title(f"{protocol_label(protocol)}{_fixed_coords(protocol, select)}: {_metric_label(metric)}")
    ax.legend(fontsize=8, title="model", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, data, stem)


def plot_label_curves(frame: pd.DataFrame, stem: str | Path, *, protocol: str, metric: str = "top1",
                      select: Mapping[str, Any] | None = None) -> list[Path]:
    """Accuracy against labels per class (shots) or labelled fraction (%), one panel per dataset
    and kind, one line per model: every point has a ± std error bar over seeds (so a setting
    with one point still shows its spread), joined by a ± std band where a line has two or more."""
    rows = select_rows(frame, protocol=protocol, metric=metric, select=select)
    shots = rows["shots"] if "shots" in rows else pd.Series(np.nan, index=rows.index)
    fraction = rows["fraction"] if "fraction" in rows else pd.Series(np.nan, index=rows.index)
    rows = rows.assign(kind=np.where(shots.notna(), "shots", "fraction"),
                       x=np.where(shots.notna(), shots, fraction * 100)).dropna(subset=["x"])
    if rows.empty:
        raise JepaEvalError(f"no {protocol_label(protocol)} results with shots or fractions to draw",
                            expected="metric rows with a 'shots' or 'fraction' coordinate",
                            found="only subset-file results")
    rows = rows.assign(label=variant_labels(rows, ["dataset", "kind", "x"]))
    data = _seed_stats(rows, ["dataset", "kind", "label", "x"])
    panels = list(data[["dataset", "kind"]].drop_duplicates().itertuples(index=False))
    fig, axes = _figure(len(panels))
    for ax, (dataset, kind) in zip(axes, panels):
        for label, line in data[(data["dataset"] == dataset) & (data["kind"] == kind)].groupby("label"):
            line = line.sort_values("x")
            drawn = ax.errorbar(line["x"], line["mean"], yerr=line["std"], marker="o", capsize=3, label=label)
            if len(line) > 1:
                ax.fill_between(line["x"], line["mean"] - line["std"], line["mean"] + line["std"], alpha=0.2,
                                color=drawn.lines[0].get_color())
        _data_ticks(ax, data.loc[(data["dataset"] == dataset) & (data["kind"] == kind), "x"])
        ax.set_xlabel("labelled images per class" if kind == "shots" else "labelled fraction (%)")
        ax.set_ylabel(_metric_label(metric))
        ax.set_title(f"{dataset}: {protocol_label(protocol)} {_metric_label(metric).split(' (')[0]}, "
                     + ("k-shot" if kind == "shots" else "label fraction"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="model")
    return save_figure(fig, data, stem)


def plot_curve(frame: pd.DataFrame, stem: str | Path, *, protocol: str, x: str, x_label: str | None = None,
               metric: str = "top1", select: Mapping[str, Any] | None = None) -> list[Path]:
    """Accuracy against the coordinate ``x`` (e.g. k-NN's k; a log axis when it spans a factor of
    10), one panel per dataset, one line per model and setting (e.g. '1-shot'), ± std over seeds."""
    rows = select_rows(frame, protocol=protocol, metric=metric, select=select, defaults=False)
    models = variant_labels(rows, ["dataset", "setting", x])
    rows = rows.assign(label=[f"{m} ({s})" if s else m for m, s in zip(models, rows["setting"])])
    data = _seed_stats(rows, ["dataset", "label", x])
    datasets = sorted(data["dataset"].unique())
    fig, axes = _figure(len(datasets))
    for ax, dataset in zip(axes, datasets):
        for label, line in data[data["dataset"] == dataset].groupby("label"):
            line = line.sort_values(x)
            ax.errorbar(line[x], line["mean"], yerr=line["std"], marker="o", capsize=3, label=label)
        _data_ticks(ax, data.loc[data["dataset"] == dataset, x])
        ax.set_xlabel(x_label or x)
        ax.set_ylabel(_metric_label(metric))
        ax.set_title(f"{dataset}: {protocol_label(protocol)} {_metric_label(metric).split(' (')[0]} against {x}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="model", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, data, stem)


def _column(rows: pd.DataFrame, name: str) -> pd.Series:
    return rows[name] if name in rows else pd.Series(np.nan, index=rows.index)


def plot_monitor(frame: pd.DataFrame, stem: str | Path, *, protocol: str,
                 collapse: Mapping[str, int | None] | None = None,
                 metrics: Sequence[str] | None = None) -> list[Path]:
    """Collapse monitoring: each metric against where it was measured (one panel each, one line
    per run): the epoch of a checkpoint monitor, the step of a live monitor (a run whose every
    row has a ``step``). The collapse point of a run (``collapse[run_id]``, on its own axis) is a
    dashed vertical line in its colour. The CSV has ``epoch`` (and ``step``) and
    ``collapse_epoch`` (and ``collapse_step``) columns."""
    collapse = dict(collapse or {})
    if metrics is None:  # the metrics the protocol's own monitor figure asks for
        metrics = next(spec.options["metrics"] for spec in get_protocol(protocol).plots if spec.kind == "monitor")
    metrics = list(metrics)
    rows = frame[(frame["protocol"] == protocol) & frame["metric"].isin(metrics)]
    if rows.empty or not {"epoch", "step"} & set(rows.columns):
        raise JepaEvalError("no monitor results to draw",
                            expected=f"monitor records with metrics {', '.join(metrics)} per epoch or step",
                            found=f"{len(rows)} rows")
    by_step = _column(rows, "step").notna().groupby(rows["run_id"]).transform("all")
    rows = rows.assign(axis=np.where(by_step, "step", "epoch"),
                       x=np.where(by_step, _column(rows, "step"), _column(rows, "epoch"))).dropna(subset=["x"])
    names = rows.groupby("model")["run_id"].nunique()
    labels = [m if names[m] == 1 else f"{m} ({r[-6:]})" for m, r in zip(rows["model"], rows["run_id"])]
    rows = rows.assign(label=labels)
    data = rows.groupby(["run_id", "label", "axis", "metric", "x"])["value"].mean().reset_index()
    axes_used = sorted(data["axis"].unique())
    for axis in axes_used:
        mine = data["axis"] == axis
        data[axis] = data["x"].where(mine).astype("Int64")
        data[f"collapse_{axis}"] = data["run_id"].map(collapse).where(mine).astype("Int64")
    present = [m for m in metrics if m in set(data["metric"])]
    fig, axes = _figure(len(present), width=4.5, height=3.4)
    colours = {run: f"C{i}" for i, run in enumerate(sorted(data["run_id"].unique()))}
    for ax, metric in zip(axes, present):
        for (run, label, axis), line in data[data["metric"] == metric].groupby(["run_id", "label", "axis"]):
            line = line.sort_values("x")
            ax.plot(line["x"], line["value"], marker=".", color=colours[run], label=label)
            if collapse.get(run) is not None:
                ax.axvline(collapse[run], color=colours[run], linestyle="--", alpha=0.8,
                           label=f"collapse, {label} ({axis} {collapse[run]})")
        ax.set_xlabel(" or ".join(axes_used))
        ax.set_ylabel(_metric_label(metric))
        ax.set_title(_metric_label(metric).split(" (")[0] + " during training")
        ax.grid(alpha=0.3)
    handles, names_ = axes[0].get_legend_handles_labels()
    axes[0].legend(handles, names_, fontsize=7)
    return save_figure(fig, data.drop(columns=["axis", "x"]), stem)


def rank_accuracy_pairs(frame: pd.DataFrame, *, rank_protocol: str, rank_metric: str, protocol: str,
                        metric: str = "top1") -> pd.DataFrame:
    """One row per checkpoint and dataset that has both a ``rank_protocol`` record and a
    ``protocol`` record with the same feature mode: model, sha256, dataset, mode, ``rank_metric``,
    accuracy (``{protocol}_{metric}``, mean over seeds, at the protocol's table coordinates such as
    k-NN's k = 20) and ``rank_bound``, RankMe's ceiling ``min(N, D)`` read back as
    rankme / rankme_norm (NaN where the record lacks either)."""
    keys = ["model", "sha256", "dataset", "mode"]
    rank = frame[frame["protocol"] == rank_protocol]
    accuracy = frame[(frame["protocol"] == protocol) & (frame["metric"] == metric)]
    accuracy = table_defaults(accuracy, get_protocol(protocol), {}) if not accuracy.empty else accuracy

    def mean_of(rows: pd.DataFrame, name: str) -> pd.Series:
        return rows.groupby(keys, dropna=False)["value"].mean().rename(name)

    values = pd.concat([mean_of(rank[rank["metric"] == rank_metric], rank_metric),
                        mean_of(accuracy, f"{protocol}_{metric}")], axis=1, join="inner")
    bound = pd.concat([mean_of(rank[rank["metric"] == "rankme"], "rankme_value"),
                       mean_of(rank[rank["metric"] == "rankme_norm"], "rankme_norm")], axis=1)
    values["rank_bound"] = (bound["rankme_value"] / bound["rankme_norm"]).round().reindex(values.index)
    return values.reset_index()


def _sizes(pairs: pd.DataFrame) -> pd.Series:
    """Points per feature size (``rank_bound``; an unknown bound is a size of its own)."""
    return pairs.groupby("rank_bound", dropna=False).size()


def _rho_by_feature_size(data: pd.DataFrame, rank_metric: str, accuracy: str) -> pd.DataFrame:
    """``data`` with ``spearman_rho``/``spearman_p`` computed within each ``rank_bound`` group.

    A rank metric counts dimensions, so it only ranks features of one size: groups of fewer
    than :data:`MIN_RANKED` points get NaN. Rows without a known bound form one group of their own.
    """
    data = data.assign(spearman_rho=np.nan, spearman_p=np.nan)
    for _, group in data.groupby("rank_bound", dropna=False):
        if len(group) >= MIN_RANKED:
            rho, p_value = spearmanr(group[rank_metric], group[accuracy])
            data.loc[group.index, ["spearman_rho", "spearman_p"]] = [float(rho), float(p_value)]
    return data


def _bound_label(bound: float) -> str:
    return "min(N, D) unknown" if pd.isna(bound) else f"min(N, D) = {bound:.0f}"


def plot_rank_vs_accuracy(frame: pd.DataFrame, stem: str | Path, *, rank_protocol: str, rank_metric: str,
                          protocol: str, metric: str = "top1") -> list[Path]:
    """Scatter of a rank metric against accuracy across checkpoints, Spearman ρ in the title.

    ρ is computed among features of one size (one ``rank_bound``, at least :data:`MIN_RANKED`
    points): the CSV holds the points plus each point's group ``spearman_rho`` and
    ``spearman_p`` (scipy.stats.spearmanr), NaN for groups too small to rank. Several sizes
    get a log x-axis.
    """
    accuracy = f"{protocol}_{metric}"
    pairs = rank_accuracy_pairs(frame, rank_protocol=rank_protocol, rank_metric=rank_metric, protocol=protocol,
                                metric=metric)
    sizes = _sizes(pairs)
    if not (sizes >= MIN_RANKED).any():
        raise JepaEvalError(f"too few checkpoints to correlate {rank_metric} with {protocol} {metric}",
                            expected=f"at least {MIN_RANKED} (checkpoint, dataset) pairs with both results and "
                                     "features of one size",
                            found=", ".join(f"{n} with {_bound_label(b)}" for b, n in sizes.items()) or "0")
    data = _rho_by_feature_size(pairs, rank_metric, accuracy)
    several = len(sizes) > 1
    fig, (ax,) = _figure(1, width=5.5, height=4.2)
    for (dataset, bound), points in data.groupby(["dataset", "rank_bound"], dropna=False):
        label = f"{dataset}, {_bound_label(bound)}" if several else dataset
        ax.scatter(points[rank_metric], points[accuracy], s=30, label=label)
        for _, point in points.iterrows():
            ax.annotate(point["model"], (point[rank_metric], point[accuracy]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    if several:
        ax.set_xscale("log")
    ranked = data.dropna(subset=["spearman_rho"]).groupby("rank_bound", dropna=False)
    rhos = "; ".join(f"ρ = {g['spearman_rho'].iloc[0]:.2f} (n = {len(g)}"
                     + (f", {_bound_label(b)})" if several else ")") for b, g in ranked)
    ax.set_xlabel(_metric_label(rank_metric))
    ax.set_ylabel(f"{protocol_label(protocol)} {_metric_label(metric)}")
    ax.margins(0.1)
    ax.set_title(f"{_metric_label(rank_metric)} vs {protocol_label(protocol)} "
                 f"{_metric_label(metric).split(' (')[0]}: Spearman {rhos}", fontsize=9 if several else 10)
    ax.legend(fontsize=8, title="dataset")
    ax.grid(alpha=0.3)
    return save_figure(fig, data, stem)


def signal_pairs(frame: pd.DataFrame, protocol: str = "signals") -> pd.DataFrame:
    """One row per (signals record, signal, checkpoint): run_id, model, signal, epoch, its value,
    the checkpoint's accuracy, and the record's Spearman rho and points for that signal."""
    rows = frame[frame["protocol"] == protocol]
    if rows.empty or "epoch" not in rows or "signal" not in rows:
        return pd.DataFrame(columns=["run_id", "model", "signal", "epoch", "value", "accuracy", "spearman_rho", "points"])
    accuracy = rows[rows["metric"] == "accuracy"].set_index(["run_id", "epoch"])["value"].rename("accuracy")
    stats = rows[rows["metric"].isin(["spearman_rho", "points"])].pivot_table(
        index=["run_id", "signal"], columns="metric", values="value", aggfunc="first")
    points = rows[rows["epoch"].notna() & ~rows["metric"].isin(["accuracy", "spearman_rho", "spearman_p", "points"])]
    points = points.rename(columns={"metric": "signal_name"})[["run_id", "model", "signal_name", "epoch", "value"]]
    points = points.rename(columns={"signal_name": "signal"}).join(accuracy, on=["run_id", "epoch"])
    return points.join(stats, on=["run_id", "signal"]).reset_index(drop=True)


def plot_signals(frame: pd.DataFrame, stem: str | Path, *, protocol: str = "signals") -> list[Path]:
    """Each label-free signal against probe accuracy across a run's checkpoints (one panel per
    signal, one colour per signals record, points labelled by epoch), Spearman rho and the
    number of points in each panel's legend."""
    data = signal_pairs(frame, protocol)
    if data.empty:
        raise JepaEvalError("no signals results to draw", expected="records written by jepa-eval signals",
                            found="none")
    present = list(dict.fromkeys(data["signal"]))
    fig, axes = _figure(len(present), width=4.2, height=3.4)
    colours = {run: f"C{i}" for i, run in enumerate(sorted(data["run_id"].unique()))}
    accuracy = next((json.loads(p).get("accuracy") for p in frame.loc[frame["protocol"] == protocol, "params"]), "")
    for ax, signal in zip(axes, present):
        for (run, model), points in data[data["signal"] == signal].groupby(["run_id", "model"]):
            rho, n = points["spearman_rho"].iloc[0], points["points"].iloc[0]
            ax.plot(points["value"], points["accuracy"], marker="o", linestyle=":", color=colours[run],
                    label=f"{model}: ρ = {rho:.2f} (n = {n:.0f})" if pd.notna(rho) else f"{model}: n = {n:.0f}")
            for _, point in points.iterrows():
                ax.annotate(f"{point['epoch']:.0f}", (point["value"], point["accuracy"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(_metric_label(signal))
        ax.set_ylabel(f"{protocol_label(str(accuracy))} top-1 (%)")
        ax.set_title(f"{_metric_label(signal).split(' (')[0]} vs accuracy (labels: epoch)", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return save_figure(fig, data, stem)


def _bars(frame: pd.DataFrame, folder: Path, protocol: Protocol, collapse: Any) -> list[Path]:
    if not ((frame["protocol"] == protocol.name) & (frame["metric"] == "top1")).any():
        return []
    return plot_grouped_bars(frame, folder / f"bars_{protocol.name}", protocol=protocol.name)


def _curve(frame: pd.DataFrame, folder: Path, protocol: Protocol, collapse: Any, *, x: str, name: str,
           x_label: str | None = None) -> list[Path]:
    mine = frame[(frame["protocol"] == protocol.name) & (frame["metric"] == "top1")]
    if x not in mine or mine[x].nunique() < 2:
        return []
    return plot_curve(frame, folder / name, protocol=protocol.name, x=x, x_label=x_label)


def _label_curves(frame: pd.DataFrame, folder: Path, protocol: Protocol, collapse: Any) -> list[Path]:
    mine = frame[(frame["protocol"] == protocol.name) & (frame["metric"] == "top1")]
    if not any(c in mine and mine[c].notna().any() for c in ("shots", "fraction")):
        return []
    return plot_label_curves(frame, folder / f"{protocol.name}_curves", protocol=protocol.name)


def _monitor(frame: pd.DataFrame, folder: Path, protocol: Protocol, collapse: Any, *,
             metrics: Sequence[str]) -> list[Path]:
    if not ((frame["protocol"] == protocol.name) & frame["metric"].isin(list(metrics))).any():
        return []
    return plot_monitor(frame, folder / protocol.name, protocol=protocol.name, collapse=collapse, metrics=metrics)


def _rank_vs_accuracy(frame: pd.DataFrame, folder: Path, protocol: Protocol, collapse: Any, *,
                      metrics: Sequence[str], accuracy: str) -> list[Path]:
    written: list[Path] = []
    for rank_metric in metrics:
        pairs = rank_accuracy_pairs(frame, rank_protocol=protocol.name, rank_metric=rank_metric, protocol=accuracy)
        if (_sizes(pairs) >= MIN_RANKED).any():
            written += plot_rank_vs_accuracy(frame, folder / f"{rank_metric}_vs_{accuracy}",
                                             rank_protocol=protocol.name, rank_metric=rank_metric, protocol=accuracy)
    return written


def _signals(frame: pd.DataFrame, folder: Path, protocol: Protocol, collapse: Any) -> list[Path]:
    if signal_pairs(frame, protocol.name).empty:
        return []
    return plot_signals(frame, folder / protocol.name, protocol=protocol.name)


#: The kinds of figure a protocol can ask for (``PlotSpec.kind``); each draws nothing when the
#: frame lacks its data.
PLOTS = {"bars": _bars, "curve": _curve, "label_curve": _label_curves, "monitor": _monitor,
         "rank_vs_accuracy": _rank_vs_accuracy, "signals": _signals}


def write_plots(frame: pd.DataFrame, folder: str | Path, *,
                collapse: Mapping[str, int | None] | None = None) -> list[Path]:
    """Every figure the registered protocols ask for and the frame has data for, into ``folder``;
    returns the paths written."""
    folder = Path(folder)
    written: list[Path] = []
    for protocol in list_protocols():
        for spec in protocol.plots:
            written += PLOTS[spec.kind](frame, folder, protocol, collapse, **spec.options)
    return written
