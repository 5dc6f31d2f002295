"""k-NN: our FAISS path against DINO's chunked torch matmul + top-k, scikit-learn, and the bare matmul.

Data: clustered random float32 features (N train x D, M test x D, 100 classes). Same k = 20
and T = 0.07 for every weighted vote. Compared, on the same arrays:

- ours: ``jepa_eval.protocols.knn.knn_predict`` (FAISS ``IndexFlatIP``, batches of 1024 queries);
- DINO-style: L2-normalise, then per chunk of M/100 test rows (DINO's 100 chunks) a torch
  matmul against the whole bank, ``topk``, and the vote ``exp(sim / T)`` summed per class
  through a one-hot matrix, in float32, arg-max;
- scikit-learn: ``KNeighborsClassifier(algorithm='brute', metric='cosine')``. Its vote is
  unweighted (majority of the k neighbours), so its top-1 is compared under its own rule:
  the table reports its accuracy and its agreement with ours, not identity;
- bare matmul: the same chunks' ``test @ train.T`` alone, with no top-k or vote: the floor.

Top-1 predictions of ours and of the DINO-style baseline must be identical (they apply the
same rule); the count of differing rows goes into the notes.

Usage: ``python bench/bench_knn.py [--quick] [--repeats R] [--out DIR]``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier

from benchlib import Row, bench_main, interleaved_medians, make_row
from jepa_eval.protocols.knn import KNNConfig, knn_predict

K = 20
TEMPERATURE = 0.07
NUM_CLASSES = 100
DINO_CHUNKS = 100  # DINO's eval_knn splits the test set into 100 chunks
FULL = {"train": 50_000, "test": 10_000, "dims": (384, 1280), "repeats": 1}
QUICK = {"train": 2_000, "test": 400, "dims": (32,), "repeats": 1}
WARMUP_ROWS = 200


def clustered_features(num: int, centers: np.ndarray, spread: float, rng: np.random.Generator,
                       labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``num`` samples around ``centers [C, D]``: float32 [num, D] and their int64 labels [num].

    Each sample is its class centre plus Gaussian noise of standard deviation ``spread`` per
    dimension. Labels are drawn uniformly unless given (``labels [num]``).
    """
    if labels is None:
        labels = rng.integers(0, centers.shape[0], size=num)
    noise = rng.standard_normal((num, centers.shape[1]), dtype=np.float32)
    return centers[labels] + spread * noise, np.asarray(labels, dtype=np.int64)


def dino_style_top1(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, k: int,
                    temperature: float, num_classes: int, chunk: int) -> np.ndarray:
    """Top-1 classes [M] by DINO's weighted k-NN rule, computed as its evaluation code does.

    ``train [N, D]``, ``test [M, D]`` (raw features; normalised here), ``chunk`` test rows per
    matmul. Votes are summed in float32 through a one-hot [chunk, k, C] tensor.
    """
    bank = torch.nn.functional.normalize(torch.from_numpy(train), dim=1).T.contiguous()  # [D, N]
    queries = torch.nn.functional.normalize(torch.from_numpy(test), dim=1)
    labels = torch.from_numpy(train_labels)
    predictions = []
    for start in range(0, queries.shape[0], chunk):
        sims, idx = (queries[start:start + chunk] @ bank).topk(k, dim=1)  # [B, k]
        one_hot = torch.zeros(idx.shape[0] * k, num_classes)
        one_hot.scatter_(1, labels[idx].reshape(-1, 1), 1.0)
        weights = (sims / temperature).exp()
        scores = (one_hot.view(idx.shape[0], k, num_classes) * weights[:, :, None]).sum(dim=1)
        predictions.append(scores.sort(dim=1, descending=True).indices[:, 0])
    return torch.cat(predictions).numpy()


def bare_matmul(train: np.ndarray, test: np.ndarray, chunk: int) -> None:
    """``test @ train.T`` in chunks of ``chunk`` test rows, results discarded: the floor."""
    bank = torch.from_numpy(train).T.contiguous()
    queries = torch.from_numpy(test)
    for start in range(0, queries.shape[0], chunk):
        queries[start:start + chunk] @ bank


def ours_top1(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    config = KNNConfig(ks=(K,), temperature=TEMPERATURE)
    return knn_predict(train, train_labels, test, config, NUM_CLASSES)[K][:, 0]


def sklearn_top1(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    model = KNeighborsClassifier(n_neighbors=K, algorithm="brute", metric="cosine")
    return model.fit(train, train_labels).predict(test)


def _candidates(train: np.ndarray, y: np.ndarray, test: np.ndarray, chunk: int,
                ) -> dict[str, Callable[[], object]]:
    return {
        "ours": lambda: ours_top1(train, y, test),
        "dino": lambda: dino_style_top1(train, y, test, K, TEMPERATURE, NUM_CLASSES, chunk),
        "sklearn": lambda: sklearn_top1(train, y, test),
        "matmul": lambda: bare_matmul(train, test, chunk),
    }


def bench_width(dim: int, num_train: int, num_test: int, repeats: int, seed: int = 0) -> list[Row]:
    """All k-NN comparisons at feature width ``dim``."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((NUM_CLASSES, dim), dtype=np.float32)
    train, y_train = clustered_features(num_train, centers, 2.0, rng)
    test, y_test = clustered_features(num_test, centers, 2.0, rng)
    chunk = max(1, num_test // DINO_CHUNKS)
    warm = _candidates(train, y_train, test[:WARMUP_ROWS], chunk)
    seconds, out = interleaved_medians(_candidates(train, y_train, test, chunk), repeats, warm)
    ours, dino, sk = (np.asarray(out[name]) for name in ("ours", "dino", "sklearn"))
    differ = int((ours != dino).sum())
    acc = {name: 100.0 * float((pred == y_test).mean()) for name, pred in
           (("ours", ours), ("dino", dino), ("sklearn", sk))}
    agree = 100.0 * float((sk == ours).mean())
    case = f"D={dim}, {num_train}x{num_test}, k={K}"
    t = seconds
    return [
        make_row("knn", case, "ours (FAISS)", f"DINO-style torch, chunks of {chunk}", "s", t["ours"], t["dino"],
                 t["dino"] / t["ours"], ">= 1.5", repeats,
                 f"speed-up; top-1 identical: {'yes' if differ == 0 else f'no, {differ} rows differ'}; "
                 f"top-1 ours {acc['ours']:.2f}%, DINO-style {acc['dino']:.2f}%",
                 miss_note=f"the DINO-style baseline is only {t['dino'] / t['matmul']:.2f}x the bare matmul, "
                           "so any search that does the product is at most that much faster"),
        make_row("knn", case, "ours (FAISS)", "bare chunked matmul", "s", t["ours"], t["matmul"],
                 t["ours"] / t["matmul"], "<= 1.3", repeats,
                 "cost ratio over the floor (matmul without top-k or vote)",
                 miss_note="FAISS's exact inner-product search is slower than torch's matmul on this CPU"),
        make_row("knn", case, "ours (FAISS)", "sklearn brute cosine", "s", t["ours"], t["sklearn"],
                 t["sklearn"] / t["ours"], "", repeats,
                 f"speed-up; sklearn votes unweighted: top-1 {acc['sklearn']:.2f}%, "
                 f"agrees with ours on {agree:.2f}% of rows"),
    ]


def run(quick: bool, repeats: int | None) -> list[Row]:
    size = QUICK if quick else FULL
    reps = repeats or size["repeats"]
    return [row for dim in size["dims"] for row in bench_width(dim, size["train"], size["test"], reps)]


def main(argv: list[str] | None = None) -> list[Row]:
    return bench_main("knn", run, __doc__, argv)


if __name__ == "__main__":
    main()
