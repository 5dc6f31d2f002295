"""Regenerate the CIFAR-10 case study (results/case-study/) with one command.

    .venv/bin/python scripts/case_study.py               # train what is missing, evaluate, report
    .venv/bin/python scripts/case_study.py --skip-train  # evaluate the runs already on disk

Run from anywhere; it works in the repository root. Steps:
1. extract ``../shared/data/cifar10-jpg.tar.gz`` once into ``.cache/shared`` and link it at
   ``.cache/case-study/cifar10`` (the ``run.data_root`` of the configs);
2. train ``configs/cifar10_tiny.yaml`` (target-encoder targets), ``configs/cifar10_tiny_30min.yaml``
   (the same recipe for 1,800 steps: the full 30-minute budget, two torch threads) and
   ``configs/cifar10_tiny_pixels.yaml`` (the pixel-target ablation) unless their last epoch
   is already on disk; torch gets one thread (``OMP_NUM_THREADS=1``) unless the variable is set,
   which was 3x faster than two on the shared 2-core machine;
3. k-NN (k = 10, 20, 100, 200) of the trained model, the random encoder of the same shape
   (``random:PATH``), raw pixels (``pixels:32``) and the pixel-target model;
4. ``jepa-eval monitor --lidar`` of each I-JEPA run (the learning curve: k-NN on subsets,
   RankMe, alpha-ReQ and LiDAR against epoch);
5. ``jepa-eval transfer`` of every model to Imagenette (linear probe, train -> val);
6. ``jepa-eval suite protocols/case-study.yaml`` over the compared models, then
   ``jepa-eval report``; ``protocols/case-study-epochs.yaml`` (linear, avgpool) over epochs
   2, 6, 10, 14 and 18 of the 30-minute run;
7. ``training.md`` / ``training.csv`` (steps, wall time, throughput of each run),
   ``knn.md`` / ``knn.csv`` (step 3 at k = 20), ``learning_curve[-30min].md`` / ``.csv`` /
   ``.png`` and ``rank_vs_knn[-30min].md`` / ``.csv`` (Spearman rho of each rank metric
   against the subset k-NN across checkpoints), ``rank_vs_linear-30min.md`` / ``.csv`` (the
   same against linear accuracy), ``transfer.md`` / ``.csv``.

Checkpoints, features and the extracted images stay under ``.cache/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ijepa.config import load_config
from jepa_eval.atomic import atomic_write_text
from jepa_eval.errors import JepaEvalError
from jepa_eval.results import ResultRecord, load_records
from jepa_eval.shared_data import extract_shared_archive

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "case-study"
OUT = REPO / "results" / "case-study"
BIN = Path(sys.executable).parent
JEPA_EVAL = str(BIN / "jepa-eval")
CONFIGS = {"ijepa": REPO / "configs" / "cifar10_tiny.yaml",
           "ijepa-pixel-target": REPO / "configs" / "cifar10_tiny_pixels.yaml",
           "ijepa-30min": REPO / "configs" / "cifar10_tiny_30min.yaml"}
THREADS = {"ijepa-30min": "2"}  # the 30-minute run had the machine to itself; the others shared it
MONITORS = {"ijepa": OUT / "monitor", "ijepa-30min": OUT / "monitor-30min"}
CURVE_METRICS = ("rankme", "alpha_req", "lidar", "feature_std")
EPOCH_SAMPLE = (2, 6, 10, 14, 18)  # checkpoints of the 30-minute run probed linearly (~3 CPU min each)
CIFAR, IMAGENETTE = CACHE / "cifar10", CACHE / "imagenette"
DATA = ["--data", "cifar10", "--data-root", str(CIFAR)]
COMMON = ["--cache-dir", str(CACHE / "features"), "--quiet"]


def run(*args: str, threads: str = "1") -> None:
    """Run a command in the repository root with ``threads`` torch threads (unless
    OMP_NUM_THREADS is set); its failure stops the script."""
    print("+", " ".join(args), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    subprocess.run(args, cwd=REPO, env=env, check=True)


def link_data() -> None:
    """Extract the shared CIFAR-10 and Imagenette JPEGs once and link them in ``CACHE``
    (CIFAR-10 is where the configs look; Imagenette is the transfer target)."""
    for archive, link in (("cifar10-jpg", CIFAR), ("imagenette-160", IMAGENETTE)):
        root = extract_shared_archive(archive, REPO / ".cache" / "shared")
        if root is None:
            raise JepaEvalError(f"the {archive} photographs are missing",
                                expected=f"../shared/data/{archive}.tar.gz beside the repository",
                                found="no such file", hint="set JEPA_EVAL_SHARED to the folder holding it")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(root)


def run_dir(name: str) -> Path:
    """The training folder (``logging.folder``) of a config."""
    return REPO / load_config(CONFIGS[name]).logging.folder


def train(name: str) -> None:
    """Train a config unless its ``{tag}-ep{epochs}`` checkpoint is already on disk."""
    cfg = load_config(CONFIGS[name])
    last = run_dir(name) / f"{cfg.logging.write_tag}-ep{cfg.optimization.epochs}.pth.tar"
    if last.exists():
        print(f"{name}: {last} exists, not retraining")
        return
    run(str(BIN / "ijepa"), "train", "--config", str(CONFIGS[name].relative_to(REPO)), "--quiet",
        threads=THREADS.get(name, "1"))


def final_checkpoint(name: str) -> Path:
    """The run's highest-epoch ``-ep{N}`` file (a run stopped early ends before its config's last)."""
    files = sorted(run_dir(name).glob("*-ep*.pth.tar"), key=lambda p: int(p.name.split("-ep")[1].split(".")[0]))
    if not files:
        raise JepaEvalError(f"no checkpoint in {run_dir(name)}", expected="a finished or stopped training run",
                            hint="run this script without --skip-train")
    return files[-1]


def models() -> dict[str, str]:
    """Name -> checkpoint spec of the four compared models."""
    trained = final_checkpoint("ijepa")
    architecture = run_dir("ijepa") / "jepa-ep1.pth.tar"  # random:PATH uses only PATH's shape (and --seed)
    found = {"ijepa": str(trained), "random-init": f"random:{architecture}", "pixels": "pixels:32"}
    for name in ("ijepa-pixel-target", "ijepa-30min"):
        if run_dir(name).is_dir():
            found[name] = str(final_checkpoint(name))
    return found


def knn_and_curve(compared: dict[str, str]) -> None:
    """k-NN of each model not yet in ``OUT/knn``, and the learning curve of each I-JEPA run
    (rank metrics incl. LiDAR and a subset k-NN per checkpoint)."""
    done = {r.model["name"] for r in load_records(OUT / "knn")} if (OUT / "knn").is_dir() else set()
    for name, spec in compared.items():
        if name not in done:
            run(JEPA_EVAL, "knn", "--ckpt", spec, "--name", name, *DATA, *COMMON, "--results-dir", str(OUT / "knn"))
    for name, folder in MONITORS.items():
        if run_dir(name).is_dir() and not folder.is_dir():
            run(JEPA_EVAL, "monitor", str(run_dir(name)), *DATA, "--samples", "5000", "--lidar", *COMMON,
                "--results-dir", str(folder))


def transfer(compared: dict[str, str]) -> None:
    """Linear transfer of every CIFAR-10 model to Imagenette (train -> val), unless done:
    the encoders choose between avgpool and avgpool4, raw pixels have the one mode."""
    if (OUT / "transfer").is_dir():
        return
    target = ["--datasets", f"imagefolder:{IMAGENETTE}", *COMMON, "--results-dir", str(OUT / "transfer")]
    encoders = sum((["--ckpt", f"{n}={s}"] for n, s in compared.items() if n != "pixels"), [])
    run(JEPA_EVAL, "transfer", *encoders, *target)
    run(JEPA_EVAL, "transfer", "--ckpt", f"pixels={compared['pixels']}", "--features", "pixels", *target)


def transfer_rows(records: list[ResultRecord]) -> list[dict[str, object]]:
    """Top-1 on Imagenette val of every transfer record, best first."""
    rows = []
    for record in records:
        top1 = next(m["value"] for m in record.metrics if m["name"] == "top1")
        rows.append({"model": record.model["name"], "features (chosen on val)": record.summary["mode"],
                     "Imagenette top-1": f"{top1:.2f}"})
    return sorted(rows, key=lambda r: -float(r["Imagenette top-1"]))


def epoch_probes() -> None:
    """Linear accuracy (avgpool) of every 4th saved epoch of the 30-minute run, unless done."""
    if (OUT / "epochs").is_dir() or not run_dir("ijepa-30min").is_dir():
        return
    ckpts = sum((["--ckpt", f"ep{e}={run_dir('ijepa-30min') / f'jepa-ep{e}.pth.tar'}"] for e in EPOCH_SAMPLE), [])
    run(JEPA_EVAL, "suite", str(REPO / "protocols" / "case-study-epochs.yaml"), *ckpts, *DATA[2:], *COMMON,
        "--results-dir", str(OUT / "epochs"), threads="2")


def rank_vs_linear_rows(curve: list[dict[str, object]], records: list[ResultRecord]) -> list[dict[str, object]]:
    """Spearman rho of each monitor metric against linear top-1 over the probed epochs."""
    linear = {int(r.model["name"].removeprefix("ep")): r.summary["top1"] for r in records}
    epochs = sorted(linear)
    return [{"metric": metric, "epochs": " ".join(str(e) for e in epochs),
             "linear top-1": " ".join(f"{linear[e]:.2f}" for e in epochs),
             "spearman rho vs linear": f"{rho:.2f}", "p": f"{p:.1g}"}
            for metric, (_, rho, p) in spearman_by_metric(curve, linear).items()]


def suite(compared: dict[str, str]) -> None:
    """The case-study suite over the compared models, and its report."""
    ckpts = sum((["--ckpt", f"{name}={spec}"] for name, spec in compared.items()), [])
    run(JEPA_EVAL, "suite", str(REPO / "protocols" / "case-study.yaml"), *ckpts, *DATA[2:], *COMMON,
        "--results-dir", str(OUT / "suite"))
    run(JEPA_EVAL, "report", str(OUT / "suite"), "--out", str(OUT / "report"))


def table(rows: list[dict[str, object]], stem: str) -> None:
    """Write ``rows`` as ``OUT/stem.csv`` and a Markdown table ``OUT/stem.md``."""
    columns = list(rows[0])
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(OUT / f"{stem}.csv", text.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    atomic_write_text(OUT / f"{stem}.md", "\n".join(lines) + "\n")


def training_rows() -> list[dict[str, object]]:
    """Steps, images, wall time (config written -> last checkpoint written) and throughput per run."""
    rows = []
    for name, path in CONFIGS.items():
        cfg = load_config(path)  # not the run's saved copy, which may predate a schema change
        folder = REPO / cfg.logging.folder
        if not folder.is_dir():
            continue
        with open(folder / f"{cfg.logging.write_tag}_r0.csv", newline="") as handle:
            log = list(csv.DictReader(handle))
        last = final_checkpoint(name)
        wall = last.stat().st_mtime - (folder / "params-ijepa.yaml").stat().st_mtime
        steps = len(log)
        images = steps * cfg.data.batch_size
        compute = sum(float(r["time_ms"]) for r in log) / 1000
        rows.append({"run": name, "target": cfg.run.target, "epochs done": int(log[-1]["epoch"]),
                     "epochs planned": cfg.optimization.epochs, "steps": steps, "images": images,
                     "wall (min)": f"{wall / 60:.1f}", "steps/s": f"{steps / wall:.3f}",
                     "images/s": f"{images / wall:.1f}", "step compute (s, mean)": f"{compute / steps:.2f}",
                     "first loss": f"{float(log[0]['loss']):.4f}", "last loss": f"{float(log[-1]['loss']):.4f}"})
    return rows


def knn_rows(records: list[ResultRecord]) -> list[dict[str, object]]:
    """Top-1/top-5 at k = 20 of every k-NN record, by model."""
    rows = []
    for record in sorted(records, key=lambda r: -r.summary.get("best_top1", 0)):
        at20 = {m["name"]: m["value"] for m in record.metrics if m.get("k") == 20}
        rows.append({"model": record.model["name"], "features": record.features["mode"],
                     "k-NN top-1 (k=20)": f"{at20['top1']:.2f}", "k-NN top-5 (k=20)": f"{at20['top5']:.2f}"})
    return rows


def curve_rows(record: ResultRecord) -> list[dict[str, object]]:
    """One row per checkpoint of a monitor record: epoch, the rank metrics it has, k-NN top-1."""
    by_epoch: dict[int, dict[str, object]] = {}
    for m in record.metrics:
        row = by_epoch.setdefault(m["epoch"], {"epoch": m["epoch"], "checkpoint": m["checkpoint"]})
        if m["name"] in (*CURVE_METRICS, "knn_top1"):
            row[m["name"]] = f"{m['value']:.4g}"
    return [by_epoch[e] for e in sorted(by_epoch)]


def spearman_by_metric(curve: list[dict[str, object]], accuracy: dict[int, float]) -> dict[str, tuple[int, float, float]]:
    """(points, rho, p) of each rank metric of ``curve`` against ``accuracy`` (by epoch), for
    the metrics with at least 3 epochs in common."""
    from scipy.stats import spearmanr

    found = {}
    for metric in CURVE_METRICS:
        pairs = [(float(r[metric]), accuracy[int(r["epoch"])]) for r in curve
                 if metric in r and int(r["epoch"]) in accuracy]
        if len(pairs) >= 3:
            rho, p = spearmanr(*zip(*pairs))
            found[metric] = (len(pairs), float(rho), float(p))
    return found


def correlation_rows(curve: list[dict[str, object]]) -> list[dict[str, object]]:
    """Spearman rho (and p) of each rank metric against the subset k-NN across checkpoints."""
    knn = {int(r["epoch"]): float(r["knn_top1"]) for r in curve if "knn_top1" in r}
    return [{"metric": metric, "checkpoints": n, "spearman rho vs k-NN": f"{rho:.2f}", "p": f"{p:.1g}"}
            for metric, (n, rho, p) in spearman_by_metric(curve, knn).items()]


def summarise() -> None:
    table(training_rows(), "training")
    table(knn_rows(load_records(OUT / "knn")), "knn")
    if (OUT / "transfer").is_dir():
        table(transfer_rows(load_records(OUT / "transfer")), "transfer")
    for name, folder in MONITORS.items():
        if not folder.is_dir():
            continue
        stem = "learning_curve" + folder.name.removeprefix("monitor")
        [monitor] = load_records(folder)
        curve = curve_rows(monitor)
        table(curve, stem)
        table(correlation_rows(curve), stem.replace("learning_curve", "rank_vs_knn"))
        if name == "ijepa-30min" and (OUT / "epochs").is_dir():
            table(rank_vs_linear_rows(curve, load_records(OUT / "epochs")), "rank_vs_linear-30min")
        [plot] = folder.glob("*.png")
        shutil.copyfile(plot, OUT / f"{stem}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-train", action="store_true", help="evaluate the runs already on disk")
    parser.add_argument("--skip-suite", action="store_true", help="k-NN and the learning curve only")
    args = parser.parse_args()
    os.chdir(REPO)
    link_data()
    if not args.skip_train:
        for name in CONFIGS:
            train(name)
    chosen = models()
    knn_and_curve(chosen)
    transfer(chosen)
    if not args.skip_suite:
        suite(chosen)
        epoch_probes()
    summarise()


if __name__ == "__main__":
    try:
        main()
    except JepaEvalError as exc:
        sys.exit(f"error: {exc}")
