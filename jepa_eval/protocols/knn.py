"""Weighted k-NN classification on frozen features, as in DINO's ``eval_knn``.

Features are L2-normalised, so inner product = cosine similarity. Each test sample takes its
``k`` most similar training samples; neighbour ``j`` votes for its class with weight
``exp(sim_j / T)``; classes are ranked by their vote totals. Top-1 and top-5 accuracy (percent)
are reported for every ``k`` in ``KNNConfig.ks`` from ONE search with ``max(ks)`` neighbours.

Determinism: class totals are summed in float64 and ranked with a stable sort, so equal totals
(e.g. classes that got no vote) are ranked lowest class index first. Two backends find the
neighbours: FAISS exact inner-product search (``IndexFlatIP``, the default) and a plain chunked
torch matmul + ``topk`` (the reference, as DINO does it). Both feed the same vote, so they
agree exactly except at near-ties: their float32 similarities may differ in the last bits
(~1e-7), so two training samples (almost) equally similar at the k-th place, or two classes
with (almost) equal totals, may resolve differently. Tests use data where this cannot happen;
on random 384-d features (50,000 train, 10,000 test, k in {10, 20, 100, 200}) top-1 agreed on
every query and the top-5 order differed on 2 queries at k = 100.

With ``cap_k`` (for k-shot draws, where the training split can be smaller than k), a k above the
number of training samples N is capped at N: every training sample votes, and the rows of that k
carry the coordinate ``neighbours`` = N; without it such a k is an error.

Memory is bounded by querying ``batch_size`` test samples at a time: FAISS needs
O(batch_size x max(k)) for results, the torch backend O(batch_size x N) for similarities;
neither ever forms the full test x train matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from jepa_eval.core.devices import resolve_device
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.checks import check_num_classes, check_split_pair
from jepa_eval.protocols.registry import (Evaluation, Inputs, Needs, PlotSpec, Protocol, Selection, Shown, TableSpec,
                                          joined, option, register)
from jepa_eval.protocols.sampling import shot_seeds_field, shots_field, shots_setting
from jepa_eval.results.record import Metric

TOP_CLASSES = 5  # ranked classes kept per query, for top-5 accuracy
REFERENCE_K = 20  # the k that DINO reports and tables, transfer and the monitor use

# A searcher maps L2-normalised queries [B, D] to (similarities [B, K] descending, indices [B, K]).
Searcher = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class KNNConfig:
    """k-NN hyper-parameters; defaults are DINO's (k in {10, 20, 100, 200}, T = 0.07)."""

    ks: tuple[int, ...] = option((10, 20, 100, 200), "Comma-separated k values, one search.", flag="--k")
    temperature: float = option(0.07, "Vote weight exp(sim/T).")
    batch_size: int = 1024  # test samples per search chunk
    backend: str = "faiss"  # 'faiss' (exact IndexFlatIP) or 'torch' (matmul + topk)
    shots: tuple[int | str, ...] = shots_field()
    shot_seeds: int = shot_seeds_field()
    cap_k: bool = option(False, "Cap a k above the training-set size at that size (all samples vote), "
                                "e.g. for 1-shot draws of few classes.")


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32 [N, D]); an all-zero row stays zero."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return np.ascontiguousarray(features / np.maximum(norms, 1e-12), dtype=np.float32)


def _faiss_searcher(train: np.ndarray, k: int, device: str | torch.device | None) -> Searcher:
    """Exact inner-product search on the CPU (``device`` is unused: faiss-cpu)."""
    import faiss

    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train)
    return lambda queries: index.search(queries, k)


def _torch_searcher(train: np.ndarray, k: int, device: str | torch.device | None) -> Searcher:
    """Chunked matmul + topk on ``device`` (default: CUDA when available), in float32."""
    device = resolve_device(device)
    bank = torch.from_numpy(train).to(device)  # [N, D], float32: no autocast, to match FAISS

    def search(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = torch.from_numpy(queries).to(device) @ bank.T  # [B, N]
        top = sims.topk(k, dim=1, largest=True, sorted=True)
        return top.values.cpu().numpy(), top.indices.cpu().numpy()

    return search


BACKENDS: dict[str, Callable[[np.ndarray, int, Any], Searcher]] = {
    "faiss": _faiss_searcher,
    "torch": _torch_searcher,
}


def weighted_vote(sims: np.ndarray, neighbour_labels: np.ndarray, ks: list[int],
                  temperature: float, num_classes: int) -> dict[int, np.ndarray]:
    """Rank classes by the summed weights ``exp(sim / T)`` of the first k neighbours, per k.

    ``sims`` and ``neighbour_labels`` are [B, max(ks)], most similar first. Returns
    {k: int64 [B, min(5, C)]}, best class first; equal totals rank the lower class index first.
    """
    weights = torch.from_numpy(sims.astype(np.float64) / temperature).exp()
    labels = torch.from_numpy(neighbour_labels)
    totals = torch.zeros(sims.shape[0], num_classes, dtype=torch.float64)
    ranked: dict[int, np.ndarray] = {}
    done = 0
    for k in sorted(ks):
        totals.scatter_add_(1, labels[:, done:k], weights[:, done:k])
        done = k
        order = torch.sort(totals, dim=1, descending=True, stable=True).indices
        ranked[k] = order[:, :TOP_CLASSES].numpy()
    return ranked


def _check_ks(ks: tuple[int, ...], num_train: int, cap: bool) -> list[int]:
    if not ks or min(ks) < 1:
        raise JepaEvalError("k-NN needs positive neighbour counts",
                            expected="k values of at least 1", found=f"ks = {tuple(ks)}")
    if max(ks) > num_train and not cap:
        raise JepaEvalError("k-NN asks for more neighbours than there are training samples",
                            expected=f"k at most {num_train} (the training set size)",
                            found=f"k = {max(ks)}",
                            hint="lower --k or use a larger training split")
    return sorted(set(int(k) for k in ks))


def neighbours(k: int, num_train: int) -> int:
    """The neighbours that vote for a requested ``k``: k, capped at the training-set size."""
    return min(k, num_train)


def _check_config(config: KNNConfig) -> None:
    if config.backend not in BACKENDS:
        raise JepaEvalError("unknown k-NN backend", expected=f"one of {sorted(BACKENDS)}",
                            found=repr(config.backend))
    if not config.temperature > 0:
        raise JepaEvalError("the k-NN temperature must be positive", expected="T > 0",
                            found=f"T = {config.temperature}")
    if config.batch_size < 1:
        raise JepaEvalError("the k-NN query batch size must be positive", expected="at least 1",
                            found=str(config.batch_size))


def _predict(train: np.ndarray, labels: np.ndarray, test: np.ndarray, config: KNNConfig,
             num_classes: int, device: str | torch.device | None) -> dict[int, np.ndarray]:
    _check_config(config)
    ks = _check_ks(config.ks, train.shape[0], config.cap_k)
    voting = sorted({neighbours(k, train.shape[0]) for k in ks})
    search = BACKENDS[config.backend](l2_normalize(train), max(voting), device)
    test = l2_normalize(test)
    chunks: dict[int, list[np.ndarray]] = {n: [] for n in voting}
    for start in range(0, test.shape[0], config.batch_size):
        sims, idx = search(test[start:start + config.batch_size])
        votes = weighted_vote(sims, labels[idx], voting, config.temperature, num_classes)
        for n, ranked in votes.items():
            chunks[n].append(ranked)
    return {k: np.concatenate(chunks[neighbours(k, train.shape[0])]) for k in ks}


def knn_predict(train_features: Any, train_labels: Any, test_features: Any,
                config: KNNConfig = KNNConfig(), num_classes: int | None = None,
                device: str | torch.device | None = None) -> dict[int, np.ndarray]:
    """Ranked class predictions for every test sample and every k in ``config.ks``.

    Shapes: train_features [N, D], train_labels [N], test_features [M, D] (numpy or torch).
    Returns {k: int64 [M, min(5, C)]}, best class first. ``device`` is used by the torch backend.
    """
    train, labels, test, _ = check_split_pair(train_features, train_labels, test_features, eval_name="test")
    return _predict(train, labels, test, config, check_num_classes(num_classes, labels), device)


def knn_predict_torch(train_features: Any, train_labels: Any, test_features: Any,
                      config: KNNConfig = KNNConfig(), num_classes: int | None = None,
                      device: str | torch.device | None = None) -> dict[int, np.ndarray]:
    """:func:`knn_predict` with the torch matmul + topk search, whatever ``config.backend`` says."""
    return knn_predict(train_features, train_labels, test_features,
                       replace(config, backend="torch"), num_classes, device)


def ranked_accuracy(ranked: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent from ranked predictions [M, K>=1] and labels [M]."""
    hits = ranked == labels[:, None]
    return 100.0 * float(hits[:, 0].mean()), 100.0 * float(hits[:, :TOP_CLASSES].any(axis=1).mean())


def knn_evaluate(train_features: Any, train_labels: Any, test_features: Any, test_labels: Any,
                 config: KNNConfig = KNNConfig(), num_classes: int | None = None,
                 device: str | torch.device | None = None) -> list[Metric]:
    """Weighted k-NN accuracy: rows 'top1' and 'top5' (percent) with coords {'k': k} per k.

    With fewer than 5 classes, 'top5' counts a hit among all classes (so it is 100). A k capped
    at the training-set size N (``config.cap_k``) adds the coordinate {'neighbours': N}.
    """
    train, y_train, test, y_test = check_split_pair(train_features, train_labels, test_features, test_labels,
                                                    eval_name="test")
    classes = check_num_classes(num_classes, y_train, y_test)
    rows: list[Metric] = []
    for k, ranked in _predict(train, y_train, test, config, classes, device).items():
        top1, top5 = ranked_accuracy(ranked, y_test)
        coords = {"k": k} if k <= train.shape[0] else {"k": k, "neighbours": train.shape[0]}
        rows += [Metric("top1", top1, coords), Metric("top5", top5, dict(coords))]
    return rows


def evaluate(inputs: Inputs, config: KNNConfig) -> Evaluation:
    """:func:`knn_evaluate` on the training and evaluation splits; the summary gives top-1 per k
    and the best k by top-1."""
    metrics = knn_evaluate(inputs.train.features, inputs.train.labels, inputs.eval.features,
                           inputs.eval.labels, config, num_classes=inputs.num_classes, device=inputs.device)
    top1 = [m for m in metrics if m.name == "top1"]
    best = max(top1, key=lambda m: m.value)
    summary: dict[str, Any] = {f"top1_k{m.coords['k']}": m.value for m in top1}
    summary.update(best_top1=best.value, best_k=best.coords["k"])
    return Evaluation(metrics, summary)


def _caption(shown: Shown) -> str:
    temperatures = [p["temperature"] for p in shown.params if "temperature" in p]
    return f"k-NN: k={joined(int(k) for k in shown.values.get('k', []))}" + (
        f", T={joined(temperatures)}" if temperatures else "")


def _reference_top1(summary: dict[str, Any]) -> float:
    return summary.get(f"top1_k{REFERENCE_K}", summary["best_top1"])


PROTOCOL = register(Protocol(
    name="knn", version="1", label="k-NN", config=KNNConfig, evaluate=evaluate, caption=_caption,
    summary="weighted k-NN on L2-normalised features (DINO's vote exp(sim / T)), top-1/5 per k",
    needs=lambda config: Needs(shots=config.shots, shot_seeds=config.shot_seeds), setting=shots_setting,
    headline=("best_top1",), table_coords={"k": REFERENCE_K},
    tables=(TableSpec("top1", "top1", shared=True),),
    plots=(PlotSpec("bars"), PlotSpec("curve", {"x": "k", "x_label": "k (neighbours)", "name": "knn_vs_k"})),
    transfer=Selection(score=_reference_top1, on="eval", by=f"top1_k{REFERENCE_K}"),
))
