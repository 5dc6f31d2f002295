"""k-shot draws: a protocol evaluated once per draw of the training split, the rows merged.

A protocol whose :class:`~jepa_eval.protocols.registry.Needs` names ``shots`` is evaluated on
every draw: for k shots and seed s, :func:`~jepa_eval.protocols.sampling.sample_shots` of the
training labels with seed s (k images a class); for ``'all'``, the whole split once. Each draw's
metric rows get the coordinates ``shots`` and ``seed`` (none for ``'all'``, so its rows are those
of a run without shots); the summary holds the whole split's values under their own keys and,
for each k, the mean over seeds of every numeric value under ``key[shots=k]`` (a chosen
hyper-parameter too: its mean over the seeds' choices).

Only the images the draws use are extracted when no setting is ``'all'`` (1-shot on ImageNet
reads 1,000 images a seed, not 1.28 M).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from jepa_eval.protocols.registry import Evaluation, Inputs, Labelled, Needs, Protocol
from jepa_eval.protocols.sampling import ALL_SHOTS, check_shot_settings, sample_shots
from jepa_eval.results.record import Metric


@dataclass(frozen=True)
class Draw:
    """One training sample to evaluate on: ``rows`` into the split (None: all of it) and the
    coordinates its metric rows get."""

    rows: np.ndarray | None
    coords: dict[str, Any] = field(default_factory=dict)


def shot_draws(labels: np.ndarray, needs: Needs) -> list[Draw]:
    """The draws of ``needs.shots`` over a split with ``labels`` int64 [N], in the order given."""
    check_shot_settings(needs.shots, needs.shot_seeds)
    draws = []
    for shots in needs.shots:
        if shots == ALL_SHOTS:
            draws.append(Draw(None))
        else:
            draws += [Draw(sample_shots(labels, int(shots), seed), {"shots": int(shots), "seed": seed})
                      for seed in range(needs.shot_seeds)]
    return draws


def rows_needed(draws: list[Draw], total: int) -> np.ndarray | None:
    """Sorted rows of a split of ``total`` rows that some draw uses; None when they are all of them
    (then the whole split's features serve, as cached for any other protocol)."""
    if any(draw.rows is None for draw in draws):
        return None
    rows = np.unique(np.concatenate([draw.rows for draw in draws]))
    return None if rows.size == total else rows


def relative_to(draws: list[Draw], extracted: np.ndarray | None) -> list[Draw]:
    """The draws with rows counted among the ``extracted`` rows (sorted) instead of the whole split."""
    if extracted is None:
        return draws
    return [replace(draw, rows=np.searchsorted(extracted, draw.rows)) for draw in draws]


def evaluate_draws(protocol: Protocol, config: Any, inputs: Inputs, draws: list[Draw]) -> Evaluation:
    """``protocol.evaluate`` on each draw of ``inputs.train``, merged as the module docstring says."""
    metrics: list[Metric] = []
    summary: dict[str, Any] = {}
    by_shots: dict[int, list[dict[str, Any]]] = {}
    params: dict[str, Any] = {}
    dataset: dict[str, Any] = {}
    for draw in draws:
        train = inputs.train if draw.rows is None else Labelled(inputs.train.features[draw.rows],
                                                                inputs.train.labels[draw.rows])
        evaluation = protocol.evaluate(replace(inputs, train=train), config)
        metrics += [Metric(m.name, m.value, {**m.coords, **draw.coords}) for m in evaluation.metrics]
        params.update(evaluation.params)
        dataset = dataset or evaluation.dataset
        if draw.rows is None:
            summary.update(evaluation.summary)
        else:
            by_shots.setdefault(draw.coords["shots"], []).append(evaluation.summary)
    for shots, summaries in by_shots.items():
        for key, value in summaries[0].items():
            values = [s.get(key) for s in summaries]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                summary[f"{key}[shots={shots}]"] = float(np.mean(values))
    return Evaluation(metrics, summary, params=params, dataset=dataset)
