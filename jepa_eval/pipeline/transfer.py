"""Transfer: one protocol over several datasets, the best of several feature modes per dataset.

The I-JEPA paper reports, per dataset, the best of {last-layer avg-pool, last-4 avg-pool
concatenation} x {linear, BatchNorm + linear}. Here every mode runs the full linear grid (which
already holds the plain and BatchNorm heads); the winner is the head with the best held-out
*validation* top-1, so the evaluation split never chooses. For k-NN there is no validation
split: the winner is the mode with the best evaluation top-1 at the reference k, and the record
says ``selected_on: eval``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jepa_eval.pipeline import evaluate as jobs
from jepa_eval.backbones.load import Backbone
from jepa_eval.results.record import ResultRecord
from jepa_eval.features.splits import ExtractOptions, ModelSpec

REFERENCE_K = 20


def transfer_records(spec: ModelSpec, backbone: Backbone, datasets: list[str], protocol: str,
                     modes: list[str], config: Any, options: ExtractOptions,
                     log: Callable[[str], Any] | None = None) -> list[ResultRecord]:
    """One record per dataset: the winning mode's metrics plus every candidate's selection score."""
    records = []
    for dataset in datasets:
        candidates = []
        for mode in modes:
            train, test = jobs.train_eval_features(backbone, dataset, mode, options, log=log)
            if protocol == "linear":
                record = jobs.run_linear(spec, backbone, train, test, mode, config, device=options.device,
                                         progress=options.progress)
                score = record.summary["chosen_val_top1"]
            else:
                record = jobs.run_knn(spec, backbone, train, test, mode, config)
                score = record.summary.get(f"top1_k{REFERENCE_K}", record.summary["best_top1"])
            candidates.append((score, mode, record))
        records.append(_combine(protocol, candidates))
    return records


def _combine(protocol: str, candidates: list[tuple[float, str, ResultRecord]]) -> ResultRecord:
    score, mode, best = max(candidates, key=lambda item: item[0])
    selection = "val_top1" if protocol == "linear" else f"top1_k{REFERENCE_K}"
    metrics = [{**row, "mode": mode} for row in best.metrics if row["name"] in ("top1", "top5")]
    metrics += [{"name": f"candidate_{selection}", "value": s, "mode": m} for s, m, _ in candidates]
    summary = {**best.summary, "mode": mode, "selected_by": selection,
               "selected_on": "val" if protocol == "linear" else "eval"}
    params = {**best.params, "transfer": True, "modes": [m for _, m, _ in candidates]}
    record = ResultRecord(protocol=best.protocol, protocol_version=best.protocol_version, model=best.model,
                          dataset=best.dataset, features={**best.features, "mode": mode,
                                                          "candidates": [m for _, m, _ in candidates]},
                          params=params, metrics=metrics, summary=summary)
    return record
