"""Transfer: one protocol over several datasets, the best of several feature modes per dataset.

The I-JEPA paper reports, per dataset, the best of {last-layer avg-pool, last-4 avg-pool
concatenation} x {linear, BatchNorm + linear}. Every mode runs the protocol in full (the linear
grid already holds the plain and BatchNorm heads); the winner is picked by the protocol's
:class:`~jepa_eval.protocols.registry.Selection`: the linear probe's held-out *validation* top-1,
so the evaluation split never chooses; for k-NN, which has no validation split, the evaluation
top-1 at the reference k, and the record says ``selected_on: eval``.
"""

from __future__ import annotations

from typing import Any

from jepa_eval.backbones.backbone import Backbone
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.features.splits import ExtractOptions
from jepa_eval.pipeline.evaluate import Log, distinct_modes, run_protocol
from jepa_eval.protocols.registry import Protocol
from jepa_eval.results.record import FeatureInfo, Metric, ResultRecord


def check_transferable(protocol: Protocol) -> Protocol:
    """``protocol`` if transfer can pick a feature mode with it, else a :class:`JepaEvalError`."""
    if protocol.transfer is None or protocol.runs_on != "model":
        from jepa_eval.protocols import list_protocols

        names = [p.name for p in list_protocols("model") if p.transfer is not None]
        raise JepaEvalError(f"protocol {protocol.name!r} cannot be used for transfer",
                            expected=f"one of {', '.join(names)}", found=repr(protocol.name))
    return protocol


def transfer_records(spec: ModelSpec, backbone: Backbone, datasets: list[str], protocol: Protocol,
                     modes: list[str], config: Any, options: ExtractOptions,
                     log: Log | None = None) -> list[ResultRecord]:
    """One record per dataset: the winning mode's metrics plus every candidate's selection score
    (an empty list on torchrun ranks other than 0)."""
    check_transferable(protocol)
    records = []
    for dataset in datasets:
        candidates = []
        for mode in distinct_modes(protocol, config, modes):
            record = run_protocol(protocol, config, spec, backbone, dataset, mode, options, log=log)
            if record is not None:  # the record's mode: a token protocol names its token layout
                candidates.append((protocol.transfer.score(record.summary), record.features.mode, record))
        if candidates:
            records.append(_combine(protocol, candidates))
    return records


def _combine(protocol: Protocol, candidates: list[tuple[float, str, ResultRecord]]) -> ResultRecord:
    """The winning candidate's record, its top-1/top-5 rows marked with the mode, plus one
    ``candidate_<selection>`` row per mode."""
    selection = protocol.transfer
    score, mode, best = max(candidates, key=lambda item: item[0])
    modes = [m for _, m, _ in candidates]
    metrics = [Metric(row.name, row.value, {**row.coords, "mode": mode}) for row in best.metrics
               if row.name in ("top1", "top5")]
    metrics += [Metric(f"candidate_{selection.by}", s, {"mode": m}) for s, m, _ in candidates]
    summary = {**best.summary, "mode": mode, "selected_by": selection.by, "selected_on": selection.on}
    params = {**best.params, "transfer": True, "modes": modes}
    return ResultRecord(protocol=best.protocol, protocol_version=best.protocol_version, model=best.model,
                        dataset=best.dataset,
                        features=FeatureInfo(mode=mode, image_size=best.features.image_size, candidates=modes),
                        params=params, metrics=metrics, summary=summary,
                        wall_time_s=sum(record.wall_time_s for _, _, record in candidates))
