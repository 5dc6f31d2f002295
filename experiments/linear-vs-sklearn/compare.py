"""``jepa-eval linear`` against a fair scikit-learn reference on real photographs (issue 19).

For each dataset (CIFAR-10, Imagenette from ``../shared/data``) and training-set size (``200``
photos a class, seeded, or ``full``), the tool's ``linear`` protocol runs with ``--solver auto``
and ``--solver sgd`` through :func:`jepa_eval.pipeline.evaluate.run_protocol`, and the
reference is scikit-learn's ``LogisticRegression`` on the tool's own exported features (the
same feature cache): standardised with the training split's statistics (``StandardScaler``),
C chosen by accuracy on a stratified 10% held out from train (scikit-learn's
``train_test_split``, not the tool's split), warm-started along the same ascending C grid,
``max_iter`` 1000, then refitted on all of train and scored on the evaluation split (CIFAR-10
test, Imagenette val). The evaluation split is used only for the final scores.

Usage (from the repository root)::

    python experiments/linear-vs-sklearn/compare.py                       # both datasets, 200 a class and full
    python experiments/linear-vs-sklearn/compare.py --sizes 200 --eval-per-class 100 --Cs 1e-3,1e-1,10

Writes ``OUT/table.md``, ``OUT/table.csv`` and the linear records (``OUT/records/``); default OUT
``results/linear-vs-sklearn``. ``--features`` is any ``--ckpt`` spelling (``pixels:8``, a checkpoint
file, ``random:FILE``); ``--mode`` a feature mode (default: the model's).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tarfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from jepa_eval.backbones.spec import ModelSpec  # noqa: E402
from jepa_eval.features.splits import ExtractOptions, resolve_mode, split_features  # noqa: E402
from jepa_eval.pipeline.evaluate import run_protocol  # noqa: E402
from jepa_eval.protocols import get_protocol  # noqa: E402
from jepa_eval.protocols.linear import LinearConfig  # noqa: E402
from jepa_eval.protocols.logreg import DEFAULT_CS  # noqa: E402
from jepa_eval.results.record import write_record  # noqa: E402
from scripts.shared_data import extract_shared_archive, shared_data_dir  # noqa: E402

#: name -> (archive in ../shared/data, dataset spelling ('{root}' is the folder), train, eval split)
DATASETS = {"cifar10": ("cifar10-jpg", "cifar10", "train", "test"),
            "imagenette": ("imagenette-160", "imagefolder:{root}", "train", "val")}


@dataclass(frozen=True)
class Reference:
    """scikit-learn's result: evaluation ``top1`` (percent), the chosen ``C``, ``seconds`` in all."""

    top1: float
    C: float
    seconds: float


def sklearn_reference(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
                      Cs: tuple[float, ...], *, val_fraction: float = 0.1, seed: int = 0,
                      max_iter: int = 1000) -> Reference:
    """LogisticRegression on standardised features, C chosen on a stratified held-out part of
    train (the first best, i.e. the smallest C on ties), refitted on all of train."""
    started = time.perf_counter()
    scaler = StandardScaler().fit(train_x)
    x, x_eval = scaler.transform(train_x), scaler.transform(eval_x)
    fit_x, held_x, fit_y, held_y = train_test_split(x, train_y, test_size=val_fraction, stratify=train_y,
                                                    random_state=seed)
    model = LogisticRegression(max_iter=max_iter, warm_start=True)
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in sorted(Cs):
            scores.append(model.set_params(C=C).fit(fit_x, fit_y).score(held_x, held_y))
        best = sorted(Cs)[int(np.argmax(scores))]
        final = LogisticRegression(C=best, max_iter=max_iter).fit(x, train_y)
    return Reference(100.0 * final.score(x_eval, eval_y), best, time.perf_counter() - started)


def archive_subset(archive: Path, out: Path, counts: dict[str, int | None], seed: int = 0) -> Path:
    """The archive's ImageFolder tree with only ``counts[split]`` seeded photos of each class of
    each split (all when None; splits not named are left out), extracted under ``out``; returns
    the tree's root folder. Extracted once: a second call finds the tree."""
    with tarfile.open(archive, "r:gz") as tar:
        photos: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
        for member in tar.getmembers():
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and ".." not in parts and parts[1] in counts:
                photos.setdefault((parts[1], parts[2]), []).append(member)
        root = out / next(iter(photos.values()))[0].name.split("/")[0]
        if root.is_dir():
            return root
        rng = np.random.default_rng(seed)
        chosen = []
        for (split, _), members in sorted(photos.items(), key=lambda item: item[0]):
            count = counts[split]
            picked = members if count is None else [members[i] for i in np.sort(rng.permutation(len(members))[:count])]
            chosen += picked
        staging = out.with_name(out.name + ".partial")
        tar.extractall(staging, members=sorted(chosen, key=lambda m: m.offset), filter="data")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(out)
    return root


@dataclass
class Row:
    """One line of the table."""

    dataset: str
    n_train: int
    n_eval: int
    features: str
    solver: str
    top1: float
    seconds: float
    detail: str
    reference_top1: float
    reference_C: float
    reference_seconds: float

    @property
    def gap(self) -> float:
        return self.top1 - self.reference_top1


def compare(name: str, per_class: int | None, eval_per_class: int | None, features: str, mode: str | None,
            Cs: tuple[float, ...], solvers: tuple[str, ...], work: Path, records: Path | None) -> list[Row]:
    """The tool (each of ``solvers``) and the reference on one dataset and training-set size."""
    archive, spelling, train, evaluation = DATASETS[name]
    if not (shared_data_dir() / f"{archive}.tar.gz").is_file():
        raise SystemExit(f"{archive}.tar.gz is not in {shared_data_dir()}")
    if per_class is None and eval_per_class is None:
        root = extract_shared_archive(archive, work / "archives")
    else:
        root = archive_subset(shared_data_dir() / f"{archive}.tar.gz",
                              work / f"{name}-{per_class or 'all'}-{eval_per_class or 'all'}",
                              {train: per_class, evaluation: eval_per_class})
    dataset = spelling.format(root=root)
    options = ExtractOptions(data_root=str(root), device="cpu", cache_dir=str(work / "cache"), progress=False)
    spec = ModelSpec(ckpt=features)
    backbone = spec.load()
    mode = resolve_mode(backbone, mode)
    parts = [split_features(backbone, dataset, split, mode, options).features for split in (train, evaluation)]
    reference = sklearn_reference(parts[0].features, parts[0].labels, parts[1].features, parts[1].labels, Cs)
    rows = []
    for solver in solvers:
        record = run_protocol(get_protocol("linear"), LinearConfig(solver=solver, Cs=Cs), spec, backbone, dataset,
                              mode, options)
        if records is not None:
            write_record(record, records)
        summary = record.summary
        if summary["solver"] == "lbfgs":
            detail = f"C={summary['chosen_C']:g}, {summary['iterations']} iterations"
        else:
            detail = (f"lr={summary['chosen_lr']:g}, wd={summary['chosen_wd']:g}, "
                      f"{'BN' if summary['chosen_batchnorm'] else 'plain'}, {summary['steps']} steps")
            detail += f"; {summary['edge']}" if summary["edge"] else ""
        detail += f", train loss {summary['chosen_train_loss']:.3f}"
        rows.append(Row(name, record.dataset.n_train, record.dataset.n_eval, f"{features} ({mode})",
                        f"{solver} ({summary['solver']})", summary["top1"], record.wall_time_s, detail,
                        reference.top1, reference.C, reference.seconds))
    return rows


COLUMNS = ("dataset", "train images", "eval images", "features", "solver (ran)", "top-1", "seconds", "chosen",
           "sklearn top-1", "sklearn C", "sklearn seconds", "difference")


def _cells(row: Row) -> list[str]:
    return [row.dataset, f"{row.n_train:,}", f"{row.n_eval:,}", row.features, row.solver, f"{row.top1:.2f}",
            f"{row.seconds:.1f}", row.detail, f"{row.reference_top1:.2f}", f"{row.reference_C:g}",
            f"{row.reference_seconds:.1f}", f"{row.gap:+.2f}"]


def write_tables(rows: list[Row], out: Path) -> None:
    """``out/table.md`` and ``out/table.csv``."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    writer.writerows(_cells(row) for row in rows)
    (out / "table.csv").write_text(buffer.getvalue())


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="cifar10,imagenette")
    parser.add_argument("--sizes", default="200,full", help="photos a class for training: numbers or 'full'")
    parser.add_argument("--eval-per-class", type=int, default=None, help="evaluation photos a class (default: all)")
    parser.add_argument("--features", default="pixels:8", help="a --ckpt spelling: pixels:SIZE, a file, random:FILE")
    parser.add_argument("--mode", default=None)
    parser.add_argument("--Cs", default=None, help="comma-separated C grid (default: the tool's 23 values)")
    parser.add_argument("--solvers", default="auto,sgd")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / ".cache" / "linear-vs-sklearn")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "linear-vs-sklearn")
    args = parser.parse_args(argv)
    Cs = tuple(float(c) for c in args.Cs.split(",")) if args.Cs else DEFAULT_CS
    rows: list[Row] = []
    for name in args.datasets.split(","):
        for size in args.sizes.split(","):
            rows += compare(name, None if size == "full" else int(size), args.eval_per_class, args.features,
                            args.mode, Cs, tuple(args.solvers.split(",")), args.work, args.out / "records")
            write_tables(rows, args.out)
            print("\n".join(" | ".join(_cells(row)) for row in rows[-len(args.solvers.split(",")):]), flush=True)
    return rows


if __name__ == "__main__":
    main()
