"""The table of a ``signals`` record: Spearman rho of each label-free signal with accuracy, and the points."""

from __future__ import annotations

import math

from jepa_eval.report.select import protocol_label
from jepa_eval.results.record import ResultRecord

SIGNAL_LABELS = {"train_loss": "training loss", "rankme": "RankMe", "lidar": "LiDAR", "alpha_req": "α-ReQ",
                 "feature_std": "feature std", "knn_top1": "monitor k-NN top-1"}


def _number(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def signals_markdown(record: ResultRecord) -> str:
    """Markdown: one row per signal (rho, p, n; the best in bold), then one row per checkpoint
    (epoch, accuracy, each signal), then the notes."""
    accuracy = f"{protocol_label(str(record.params['accuracy']))} top-1 ({record.dataset.name}, {record.features.mode})"
    stats: dict[str, dict[str, float]] = {}
    points: dict[int, dict[str, float]] = {}
    for metric in record.metrics:
        if "signal" in metric.coords:
            stats.setdefault(metric.coords["signal"], {})[metric.name] = metric.value
        else:
            points.setdefault(int(metric.coords["epoch"]), {})[metric.name] = metric.value
    best = record.summary.get("best_signal")
    lines = [f"Spearman ρ of each label-free signal with {accuracy} across the checkpoints of "
             f"{record.model.name} (scipy.stats.spearmanr; n = checkpoints with both).", "",
             "| signal | ρ | p | n |", "|---|---:|---:|---:|"]
    for signal, values in stats.items():
        label = SIGNAL_LABELS.get(signal, signal)
        rho = _number(values.get("spearman_rho"))
        lines.append(f"| {label} | {f'**{rho}**' if signal == best else rho} | "
                     f"{_number(values.get('spearman_p'), 4)} | {values.get('points', 0):.0f} |")
    signals = list(stats)
    lines += ["", "| epoch | accuracy | " + " | ".join(SIGNAL_LABELS.get(s, s) for s in signals) + " |",
              "|---:|---:|" + "---:|" * len(signals)]
    for epoch in sorted(points):
        row = points[epoch]
        lines.append(f"| {epoch} | {_number(row.get('accuracy'))} | "
                     + " | ".join(_number(row.get(s), 4) for s in signals) + " |")
    notes = record.summary.get("notes") or []
    if best is not None:
        tied = [SIGNAL_LABELS.get(s, s) for s in record.summary.get("tied_with") or []]
        notes = [f"best: {SIGNAL_LABELS.get(best, best)}, ρ = {record.summary['best_rho']:.2f} over "
                 f"{record.summary['best_n']} checkpoints" + (f" (|ρ| tied with {', '.join(tied)})" if tied else ""),
                 *notes]
    return "\n".join(lines + [""] + [f"- {note}" for note in notes]) + "\n"
