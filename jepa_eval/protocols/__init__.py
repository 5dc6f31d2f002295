"""Evaluation protocols: pure functions over features and labels that return result rows.

A protocol never opens a file or a data loader: it takes arrays (numpy or torch) and returns
:class:`jepa_eval.results.record.Metric` rows plus small dataclasses. ``PROTOCOLS`` names each one
with a one-line description; ``PROTOCOL_VERSIONS`` is bumped whenever a change could move the
numbers a protocol reports, and is written into every result record.

The input checks every protocol shares are in :mod:`jepa_eval.protocols.checks`.
"""

from __future__ import annotations


PROTOCOLS: dict[str, str] = {
    "knn": "weighted k-NN on L2-normalised features (DINO's vote exp(sim / T)), top-1/5 per k",
    "linear": "grid of linear heads (lr x wd x BatchNorm) trained at once, chosen on held-out data",
    "lowshot": "L-BFGS logistic regression on label fractions, k shots or a subset file, over seeds",
    "rank": "label-free collapse metrics: RankMe, alpha-ReQ, LiDAR, feature std, cosine, uniformity",
    "monitor": "the rank metrics (and a quick k-NN) of every checkpoint of a training run",
}

PROTOCOL_VERSIONS: dict[str, str] = {
    "knn": "1",
    "linear": "1",
    "lowshot": "1",
    "rank": "1",
    "monitor": "1",
}

