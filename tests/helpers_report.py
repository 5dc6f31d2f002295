"""Fake but plausible result records for the report and plot tests, with known numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jepa_eval.results.record import ResultRecord, write_record

MODELS = {  # name -> (sha256, family, default mode)
    "ijepa-b16": ("a" * 64, "ijepa", "avgpool"),
    "mae-b16": ("b" * 64, "mae", "cls"),
    "dino-b16": ("c" * 64, "dino", "cls"),
    "random-b16": ("random:vit_base:seed0", "timm", "cls"),
}
# k-NN top-1 on cifar10 per model and k.
KNN_TOP1 = {"ijepa-b16": {10: 80.0, 20: 81.5, 100: 79.0}, "mae-b16": {10: 60.0, 20: 61.0, 100: 58.0},
            "dino-b16": {10: 88.0, 20: 88.4, 100: 87.0}, "random-b16": {10: 30.0, 20: 31.0, 100: 29.5}}
# Linear top-1 on cifar10 per model and seed (one run per seed).
LINEAR_TOP1 = {"ijepa-b16": [90.0, 91.0, 92.5], "mae-b16": [85.0, 86.0, 84.0],
               "dino-b16": [93.0, 92.0, 94.0], "random-b16": [40.0, 41.0, 39.5]}
RANKME = {"ijepa-b16": 300.0, "mae-b16": 250.0, "dino-b16": 420.0, "random-b16": 80.0}
LIDAR = {"ijepa-b16": 50.0, "mae-b16": 45.0, "dino-b16": 40.0, "random-b16": 5.0}
# Low-shot top-1 of ijepa-b16 on cifar10: setting -> per-seed values.
LOWSHOT = {("fraction", 0.01): [50.0, 52.0, 51.0], ("fraction", 0.1): [70.0, 71.0, 72.5],
           ("shots", 1): [20.0, 25.0, 22.0], ("shots", 5): [40.0, 42.0, 41.0]}
MONITOR_EPOCHS = list(range(0, 11))
COLLAPSE_EPOCH = 7


def _model(name: str) -> dict[str, Any]:
    sha, family, _ = MODELS.get(name, (None, "ijepa", "avgpool"))  # training runs have no digest
    return {"name": name, "path": f"/ckpt/{name}.pth", "sha256": sha, "family": family,
            "ckpt_key": "target_encoder" if family == "ijepa" else None,
            "arch": {"embed_dim": 768, "depth": 12}}


def _record(protocol: str, name: str, params: dict[str, Any], metrics: list[dict[str, Any]], *,
            created: str, mode: str | None = None, dataset: str = "cifar10", **extra: Any) -> ResultRecord:
    """A record as its result file would hold it, read back through ``ResultRecord.from_json``."""
    return ResultRecord.from_json({
        "protocol": protocol, "protocol_version": "1", "model": _model(name),
        "dataset": {"name": dataset, "train_split": "train", "eval_split": "test",
                    "n_train": 50000, "n_eval": 10000, "num_classes": 10},
        "features": {"mode": mode or MODELS.get(name, MODELS["ijepa-b16"])[2], "image_size": 224}, "params": params,
        "metrics": metrics, "created": created, "command": ["jepa-eval", protocol],
        "environment": {"python": "3"}, **extra})


def knn_record(name: str, *, created: str = "2024-01-01T00:00:00+00:00", mode: str | None = None,
               temperature: float = 0.07, shift: float = 0.0) -> ResultRecord:
    metrics = []
    for k, top1 in KNN_TOP1[name].items():
        metrics += [{"name": "top1", "value": top1 + shift, "k": k},
                    {"name": "top5", "value": min(100.0, top1 + 8 + shift), "k": k}]
    return _record("knn", name, {"ks": [10, 20, 100], "temperature": temperature, "batch_size": 1024},
                   metrics, created=created, mode=mode)


def linear_record(name: str, seed: int, *, created: str = "2024-01-02T00:00:00+00:00") -> ResultRecord:
    top1 = LINEAR_TOP1[name][seed]
    metrics = [{"name": "top1", "value": top1, "lr": 0.01, "wd": 0.0, "batchnorm": False},
               {"name": "top5", "value": min(100.0, top1 + 5), "lr": 0.01, "wd": 0.0, "batchnorm": False}]
    metrics += [{"name": "val_top1", "value": top1 - 1 - i, "lr": lr, "wd": 0.0, "batchnorm": bn}
                for i, (lr, bn) in enumerate([(0.01, False), (0.1, False), (0.01, True)])]
    params = {"learning_rates": [0.01, 0.1], "epochs": 50, "seed": seed, "selected_on": "val"}
    return _record("linear", name, params, metrics, created=created)


def lowshot_record(name: str = "ijepa-b16", *, created: str = "2024-01-03T00:00:00+00:00") -> ResultRecord:
    metrics = []
    for (kind, amount), values in LOWSHOT.items():
        for seed, top1 in enumerate(values):
            metrics += [{"name": "top1", "value": top1, kind: amount, "seed": seed, "C": 1.0},
                        {"name": "top5", "value": top1 + 10, kind: amount, "seed": seed, "C": 1.0}]
    params = {"fractions": [0.01, 0.1], "shots": [1, 5], "seeds": 3}
    return _record("lowshot", name, params, metrics, created=created)


def rank_record(name: str, *, created: str = "2024-01-04T00:00:00+00:00") -> ResultRecord:
    metrics = [{"name": "rankme", "value": RANKME[name]}, {"name": "rankme_norm", "value": RANKME[name] / 768},
               {"name": "lidar", "value": LIDAR[name]}, {"name": "alpha_req", "value": 0.9},
               {"name": "feature_std", "value": 0.03}]
    return _record("rank", name, {"samples": 10000, "seed": 0}, metrics, created=created)


def monitor_values(epoch: int, collapsing: bool) -> dict[str, float]:
    """RankMe grows, then (collapsing run) drops to 5 from COLLAPSE_EPOCH on."""
    if collapsing and epoch >= COLLAPSE_EPOCH:
        return {"rankme": 5.0, "alpha_req": 3.0, "lidar": 1.0, "knn_top1": 12.0}
    return {"rankme": 50.0 + 20 * epoch, "alpha_req": 1.5 - 0.05 * epoch, "lidar": 5.0 + 2 * epoch,
            "knn_top1": 30.0 + 4 * epoch}


def monitor_record(name: str, *, collapsing: bool, created: str = "2024-01-05T00:00:00+00:00") -> ResultRecord:
    metrics = [{"name": key, "value": value, "epoch": epoch, "checkpoint": f"jepa-ep{epoch}.pth.tar"}
               for epoch in MONITOR_EPOCHS for key, value in monitor_values(epoch, collapsing).items()]
    summary = {"collapse_epoch": COLLAPSE_EPOCH if collapsing else None, "checkpoints": len(MONITOR_EPOCHS)}
    return _record("monitor", name, {"samples": 512, "seed": 0, "knn": True}, metrics, created=created,
                   summary=summary)


def all_records() -> list[ResultRecord]:
    """Every model through k-NN, linear (3 seeds) and rank; low-shot for ijepa; two monitor runs."""
    records = []
    for name in MODELS:
        records += [knn_record(name), rank_record(name)]
        records += [linear_record(name, seed) for seed in range(3)]
    records += [lowshot_record(), monitor_record("ijepa-b16", collapsing=False),
                monitor_record("ijepa-collapse", collapsing=True)]
    return records


def write_all(folder: Path) -> list[ResultRecord]:
    """Write :func:`all_records` as JSON files into ``folder``; return them."""
    records = all_records()
    for record in records:
        write_record(record, folder)
    return records
