"""Regenerate the CIFAR-10 case study (results/case-study/) with one command.

    .venv/bin/python scripts/case_study.py               # train what is missing, evaluate, report
    .venv/bin/python scripts/case_study.py --skip-train  # evaluate the runs already on disk

Run from anywhere; it works in the repository root. Steps:
1. extract ``../shared/data/cifar10-jpg.tar.gz`` once into ``.cache/shared`` and link it at
   ``.cache/case-study/cifar10`` (the ``run.data_root`` of both configs);
2. train ``configs/cifar10_tiny.yaml`` (target-encoder targets) and
   ``configs/cifar10_tiny_pixels.yaml`` (the pixel-target ablation) unless their last epoch
   is already on disk; torch gets one thread (``OMP_NUM_THREADS=1``) unless the variable is set,
   which was 3x faster than two on the shared 2-core machine;
3. k-NN (k = 10, 20, 100, 200) of the trained model, the random encoder of the same shape
   (``random:PATH``), raw pixels (``pixels:32``) and the pixel-target model;
4. ``jepa-eval monitor`` of the main run (the learning curve: k-NN and RankMe against epoch);
5. ``jepa-eval suite protocols/case-study.yaml`` over those four models, then
   ``jepa-eval report``;
6. ``training.md`` / ``training.csv`` (steps, wall time, throughput of each run),
   ``knn.md`` / ``knn.csv`` (step 3 at k = 20) and ``learning_curve.md`` / ``.csv`` / ``.png``.

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
           "ijepa-pixel-target": REPO / "configs" / "cifar10_tiny_pixels.yaml"}
DATA = ["--data", "cifar10", "--data-root", str(CACHE / "cifar10")]
COMMON = ["--cache-dir", str(CACHE / "features"), "--quiet"]


def run(*args: str) -> None:
    """Run a command in the repository root; its failure stops the script."""
    print("+", " ".join(args), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    subprocess.run(args, cwd=REPO, env=env, check=True)


def link_data() -> None:
    """Extract the shared CIFAR-10 JPEGs once and link them where the configs look."""
    root = extract_shared_archive("cifar10-jpg", REPO / ".cache" / "shared")
    if root is None:
        raise JepaEvalError("the CIFAR-10 photographs are missing",
                            expected="../shared/data/cifar10-jpg.tar.gz beside the repository",
                            found="no such file", hint="set JEPA_EVAL_SHARED to the folder holding it")
    link = CACHE / "cifar10"
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
    run(str(BIN / "ijepa"), "train", "--config", str(CONFIGS[name].relative_to(REPO)), "--quiet")


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
    if run_dir("ijepa-pixel-target").is_dir():
        found["ijepa-pixel-target"] = str(final_checkpoint("ijepa-pixel-target"))
    return found


def knn_and_curve(compared: dict[str, str]) -> None:
    """k-NN of each model not yet in ``OUT/knn``, and the main run's learning curve."""
    done = {r.model["name"] for r in load_records(OUT / "knn")} if (OUT / "knn").is_dir() else set()
    for name, spec in compared.items():
        if name not in done:
            run(JEPA_EVAL, "knn", "--ckpt", spec, "--name", name, *DATA, *COMMON, "--results-dir", str(OUT / "knn"))
    if not (OUT / "monitor").is_dir():
        run(JEPA_EVAL, "monitor", str(run_dir("ijepa")), *DATA, "--samples", "5000", *COMMON,
            "--results-dir", str(OUT / "monitor"))


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
    for name in CONFIGS:
        folder = run_dir(name)
        if not folder.is_dir():
            continue
        cfg = load_config(folder / "params-ijepa.yaml")
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
    """One row per checkpoint of the monitor record: epoch, RankMe, feature std, k-NN top-1."""
    by_epoch: dict[int, dict[str, object]] = {}
    for m in record.metrics:
        row = by_epoch.setdefault(m["epoch"], {"epoch": m["epoch"], "checkpoint": m["checkpoint"]})
        if m["name"] in ("rankme", "feature_std", "knn_top1"):
            row[m["name"]] = f"{m['value']:.4g}"
    return [by_epoch[e] for e in sorted(by_epoch)]


def summarise() -> None:
    table(training_rows(), "training")
    table(knn_rows(load_records(OUT / "knn")), "knn")
    [monitor] = load_records(OUT / "monitor")
    table(curve_rows(monitor), "learning_curve")
    [plot] = (OUT / "monitor").glob("*.png")
    shutil.copyfile(plot, OUT / "learning_curve.png")


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
    if not args.skip_suite:
        suite(chosen)
    summarise()


if __name__ == "__main__":
    try:
        main()
    except JepaEvalError as exc:
        sys.exit(f"error: {exc}")
