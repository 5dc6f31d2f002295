"""Regenerate the case study (results/case-study/) with one command.

    .venv/bin/python scripts/case_study.py               # train what is missing, evaluate, report
    .venv/bin/python scripts/case_study.py --skip-train  # evaluate the runs already on disk

Run from anywhere; it works in the repository root. Steps:
1. extract ``../shared/data/cifar10-jpg.tar.gz`` and ``imagenette-160.tar.gz`` once into
   ``.cache/shared`` and link them at ``.cache/case-study/cifar10`` (the ``run.data_root`` of
   the CIFAR-10 configs) and ``.cache/case-study/imagenette``;
2. train ``configs/cifar10_tiny.yaml`` (target-encoder targets), ``configs/cifar10_tiny_30min.yaml``
   (the same recipe for 1,800 steps: the full 30-minute budget, two torch threads),
   ``configs/cifar10_tiny_pixels.yaml`` (the pixel-target ablation) and
   ``configs/imagenette_tiny_30min.yaml`` (the 30-minute recipe on 64-px Imagenette crops)
   unless their last epoch is already on disk; torch gets one thread (``OMP_NUM_THREADS=1``)
   for the two runs that shared the machine, two for the others, unless the variable is set;
3. k-NN (k = 10, 20, 100, 200) on CIFAR-10 of the trained models, a random encoder of each
   trained shape (``random:PATH``) and raw pixels (``pixels:32``);
4. ``jepa-eval monitor --lidar`` of the CIFAR-10 I-JEPA runs (the learning curve: k-NN on
   subsets, RankMe, alpha-ReQ and LiDAR against epoch);
5. one ``jepa-eval suite protocols/case-study.yaml`` run (CIFAR-10 k-NN, linear avgpool and
   avgpool4, 1% and 10% low-shot, rank; linear transfer to Imagenette) over those models and
   every earlier saved epoch of the 30-minute run, then ``jepa-eval report``;
6. ``training.md`` / ``.csv`` (steps, wall time, throughput of each run), ``knn.md`` / ``.csv``
   (step 3 at k = 20), ``suite.md`` / ``.csv`` (one row per model), ``epochs.md`` / ``.csv``
   (the same for every saved epoch of the 30-minute run), ``transfer.md`` / ``.csv`` (CIFAR-10
   and Imagenette linear accuracy by training set: both directions of the transfer),
   ``learning_curve[-30min].md`` / ``.csv`` / ``.png``, ``rank_vs_knn[-30min].md`` / ``.csv``
   (Spearman rho of each rank metric against the subset k-NN across checkpoints) and
   ``rank_vs_linear-30min.md`` / ``.csv`` (the same against the suite's linear accuracy);
7. ``jepa-eval signals`` of the 30-minute run: Spearman rho of each label-free signal (training
   loss, RankMe, LiDAR, alpha-ReQ) with the suite's linear accuracy (avgpool, avgpool4) and with
   the monitor's subset k-NN across its saved epochs, read from the records above and the run's
   CSV log: ``signals-30min-{linear-avgpool,linear-avgpool4,monitor-knn}.md`` / ``.png``
   (records and plot data in ``signals-30min/``).

Checkpoints, features and the extracted images stay under ``.cache/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ijepa.config import load_config
from jepa_eval.core.atomic import atomic_write_text
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.knn import REFERENCE_K
from jepa_eval.results.record import ResultRecord, load_records
from scripts.shared_data import extract_shared_archive

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "case-study"
OUT = REPO / "results" / "case-study"
BIN = Path(sys.executable).parent
JEPA_EVAL = str(BIN / "jepa-eval")
CONFIGS = {"ijepa": REPO / "configs" / "cifar10_tiny.yaml",
           "ijepa-pixel-target": REPO / "configs" / "cifar10_tiny_pixels.yaml",
           "ijepa-30min": REPO / "configs" / "cifar10_tiny_30min.yaml",
           "ijepa-imagenette": REPO / "configs" / "imagenette_tiny_30min.yaml"}
THREADS = {"ijepa-30min": "2", "ijepa-imagenette": "2"}  # these had the machine to themselves
MONITORS = {"ijepa": OUT / "monitor", "ijepa-30min": OUT / "monitor-30min",
            "ijepa-imagenette": OUT / "monitor-imagenette"}
CURVE_METRICS = ("rankme", "alpha_req", "lidar", "feature_std")
CIFAR, IMAGENETTE = CACHE / "cifar10", CACHE / "imagenette"
DATA = ["--data", "cifar10", "--data-root", str(CIFAR)]
MONITOR_DATA = {"ijepa-imagenette": ["--data", f"imagefolder:{IMAGENETTE}"]}  # a run is monitored on its own data
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


@functools.cache
def config(name: str) -> Any:
    """The parsed config of a run (read once)."""
    return load_config(CONFIGS[name])


def run_dir(name: str) -> Path:
    """The training folder (``logging.folder``) of a config."""
    return REPO / config(name).logging.folder


def train(name: str) -> None:
    """Train a config unless its ``{tag}-ep{epochs}`` checkpoint is already on disk."""
    cfg = config(name)
    last = run_dir(name) / f"{cfg.logging.write_tag}-ep{cfg.optimization.epochs}.pth.tar"
    if last.exists():
        print(f"{name}: {last} exists, not retraining")
        return
    run(str(BIN / "ijepa"), "train", "--config", str(CONFIGS[name].relative_to(REPO)), "--quiet",
        threads=THREADS.get(name, "1"))


def saved_checkpoints(name: str) -> list[Path]:
    """The run's ``-ep{N}`` files, by epoch."""
    return sorted(run_dir(name).glob("*-ep*.pth.tar"), key=epoch_of)


def epoch_of(checkpoint: str | Path) -> int:
    """N of a ``{tag}-ep{N}.pth.tar`` file."""
    return int(Path(checkpoint).name.split("-ep")[1].split(".")[0])


def final_checkpoint(name: str) -> Path:
    """The run's highest-epoch ``-ep{N}`` file (a run stopped early ends before its config's last)."""
    files = saved_checkpoints(name)
    if not files:
        raise JepaEvalError(f"no checkpoint in {run_dir(name)}", expected="a finished or stopped training run",
                            hint="run this script without --skip-train")
    return files[-1]


def models() -> dict[str, str]:
    """Name -> checkpoint spec of the compared models: the last checkpoint of each run, a random
    encoder of each trained shape (``random:PATH`` uses only PATH's shape) and raw pixels."""
    found = {"ijepa": str(final_checkpoint("ijepa")),
             "random-init": f"random:{run_dir('ijepa') / 'jepa-ep1.pth.tar'}", "pixels": "pixels:32"}
    for name in ("ijepa-pixel-target", "ijepa-30min", "ijepa-imagenette"):
        if run_dir(name).is_dir():
            found[name] = str(final_checkpoint(name))
    if "ijepa-imagenette" in found:
        found["random-init-64px"] = f"random:{found['ijepa-imagenette']}"
    return found


def epoch_models() -> dict[str, str]:
    """Name -> checkpoint of every saved epoch of the 30-minute run but its last (in ``models``)."""
    if not run_dir("ijepa-30min").is_dir():
        return {}
    return {f"ijepa-30min-ep{epoch_of(c)}": str(c) for c in saved_checkpoints("ijepa-30min")[:-1]}


def knn_and_curve(compared: dict[str, str]) -> None:
    """k-NN of each model not yet in ``OUT/knn``, and the learning curve of each I-JEPA run
    (rank metrics incl. LiDAR and a subset k-NN per checkpoint)."""
    done = {r.model.name for r in load_records(OUT / "knn")} if (OUT / "knn").is_dir() else set()
    for name, spec in compared.items():
        if name not in done:
            run(JEPA_EVAL, "knn", "--ckpt", spec, "--name", name, *DATA, *COMMON, "--results-dir", str(OUT / "knn"))
    for name, folder in MONITORS.items():
        if run_dir(name).is_dir() and not folder.is_dir():
            run(JEPA_EVAL, "monitor", str(run_dir(name)), *MONITOR_DATA.get(name, DATA), "--samples", "5000",
                "--lidar", *COMMON, "--results-dir", str(folder))


def suite(compared: dict[str, str]) -> None:
    """One case-study suite run over the compared models and the saved epochs, and its report.
    Raw pixels go last: their 3,072-d low-shot grid is the slowest entry."""
    ordered = sorted(compared.items(), key=lambda item: item[1].startswith("pixels:"))
    ckpts = sum((["--ckpt", f"{name}={spec}"] for name, spec in ordered), [])
    run(JEPA_EVAL, "suite", str(REPO / "protocols" / "case-study.yaml"), *ckpts, *DATA[2:], *COMMON,
        "--results-dir", str(OUT / "suite"), threads="2")
    run(JEPA_EVAL, "report", str(OUT / "suite"), "--out", str(OUT / "report"))


def table(rows: list[dict[str, object]], stem: str, folder: Path | None = None) -> None:
    """Write ``rows`` as ``folder/stem.csv`` and a Markdown table ``folder/stem.md`` (``folder``
    default: ``OUT``; none without rows)."""
    folder = OUT if folder is None else folder
    if not rows:
        print(f"{stem}: no rows yet, table not written")
        return
    columns = list(rows[0])
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / f"{stem}.csv", text.getvalue())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    atomic_write_text(folder / f"{stem}.md", "\n".join(lines) + "\n")


def training_rows() -> list[dict[str, object]]:
    """Steps, images, wall time (config written -> last checkpoint written) and throughput per run."""
    rows = []
    for name in CONFIGS:
        cfg = config(name)  # not the run's saved copy, which may predate a schema change
        folder = run_dir(name)
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
        at20 = {m.name: m.value for m in record.metrics if m.coords.get("k") == REFERENCE_K}
        rows.append({"model": record.model.name, "features": record.features.mode,
                     "k-NN top-1 (k=20)": f"{at20['top1']:.2f}", "k-NN top-5 (k=20)": f"{at20['top5']:.2f}"})
    return rows


def curve_rows(record: ResultRecord) -> list[dict[str, object]]:
    """One row per checkpoint of a monitor record: epoch, the rank metrics it has, k-NN top-1."""
    by_epoch: dict[int, dict[str, object]] = {}
    for m in record.metrics:
        row = by_epoch.setdefault(m.coords["epoch"], {"epoch": m.coords["epoch"], "checkpoint": m.coords["checkpoint"]})
        if m.name in (*CURVE_METRICS, "knn_top1"):
            row[m.name] = f"{m.value:.4g}"
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


def is_transfer(record: ResultRecord) -> bool:
    """Whether a linear record is the suite's transfer to Imagenette (not CIFAR-10's own probe)."""
    return bool(record.params.get("transfer", False))


def run_of(record: ResultRecord) -> str | None:
    """The config name whose run folder holds the record's checkpoint; None for random encoders
    (``random:PATH``) and raw pixels."""
    path = record.model.path or ""
    if record.model.family != "ijepa" or ":" in path:
        return None
    folder = (REPO / path).resolve().parent
    return next((name for name in CONFIGS if folder == run_dir(name).resolve()), None)


def trained_on(record: ResultRecord) -> str:
    """The training set of a record's model: "CIFAR-10", "Imagenette", or "-" (random, pixels)."""
    name = run_of(record)
    if name is None:
        return "-"
    return "Imagenette" if (config(name).run.dataset or "").startswith("imagefolder:") else "CIFAR-10"


def best_linear(records: list[ResultRecord]) -> str:
    """Top-1 and pooling of the linear record chosen on held-out train (highest
    ``chosen_val_top1``), as a table cell: "49.02 (avgpool4)"."""
    best = max(records, key=lambda r: r.summary["chosen_val_top1"])
    return f"{best.summary['top1']:.2f} ({best.features.mode})"


def suite_rows(records: list[ResultRecord], names: list[str]) -> list[dict[str, object]]:
    """One row per model of ``names`` (in that order) with its headline number of each suite
    protocol; a protocol the model lacks shows "-"."""
    rows = []
    for name in names:
        mine = [r for r in records if r.model.name == name]
        if not mine:
            continue
        row: dict[str, object] = {"model": name, "trained on": trained_on(mine[0])}
        cifar_linear = {r.features.mode: r for r in mine if r.protocol == "linear" and not is_transfer(r)}
        for r in mine:
            if r.protocol == "knn":
                row["k-NN k=20"] = f"{r.summary['top1_k20']:.2f}"
            elif r.protocol == "lowshot":
                for fraction in ("0.01", "0.1"):
                    mean, std = (r.summary[f"top1_{s}[fraction={fraction}]"] for s in ("mean", "std"))
                    row[f"{float(fraction):.0%} low-shot"] = f"{mean:.2f} ± {std:.2f}"
            elif r.protocol == "rank":
                row["RankMe"] = f"{r.summary['rankme']:.2f}"
        for mode in ("avgpool", "avgpool4", "pixels"):
            if mode in cifar_linear:
                row[f"linear {mode}"] = f"{cifar_linear[mode].summary['top1']:.2f}"
        transfer = [r for r in mine if is_transfer(r)]
        if transfer:
            row["Imagenette linear"] = best_linear(transfer)
        rows.append(row)
    columns = ["model", "trained on", "k-NN k=20", "linear avgpool", "linear avgpool4", "linear pixels",
               "1% low-shot", "10% low-shot", "RankMe", "Imagenette linear"]
    present = [c for c in columns if any(c in r for r in rows)]
    return [{c: r.get(c, "-") for c in present} for r in rows]


def transfer_rows(records: list[ResultRecord], names: list[str]) -> list[dict[str, object]]:
    """Linear top-1 on CIFAR-10 and on Imagenette (the pooling chosen on held-out train) of
    every model in ``names``, by training set: both directions of the transfer."""
    rows = []
    for name in names:
        linear = [r for r in records if r.model.name == name and r.protocol == "linear"]
        cifar = [r for r in linear if not is_transfer(r)]
        imagenette = [r for r in linear if is_transfer(r)]
        if not (cifar and imagenette):
            continue
        rows.append({"model": name, "trained on": trained_on(linear[0]),
                     "CIFAR-10 linear top-1": best_linear(cifar), "Imagenette linear top-1": best_linear(imagenette)})
    return rows


def rank_vs_linear_rows(curve: list[dict[str, object]], records: list[ResultRecord]) -> list[dict[str, object]]:
    """Spearman rho of each monitor metric against the suite's CIFAR-10 linear top-1 (avgpool and
    avgpool4) over the saved epochs of the 30-minute run."""
    rows = []
    for mode in ("avgpool", "avgpool4"):
        linear = {epoch_of(r.model.path): r.summary["top1"] for r in records
                  if r.protocol == "linear" and not is_transfer(r) and r.features.mode == mode
                  and run_of(r) == "ijepa-30min"}
        epochs = sorted(linear)
        rows += [{"metric": metric, "linear probe": mode, "epochs": " ".join(str(e) for e in epochs),
                  "linear top-1": " ".join(f"{linear[e]:.2f}" for e in epochs),
                  "spearman rho vs linear": f"{rho:.2f}", "p": f"{p:.1g}"}
                 for metric, (_, rho, p) in spearman_by_metric(curve, linear).items()]
    return rows


#: The accuracies the 30-minute run's signals are correlated with: (--accuracy, --mode or None).
SIGNAL_ACCURACIES = (("linear", "avgpool"), ("linear", "avgpool4"), ("monitor-knn", None))


def signals() -> None:
    """``jepa-eval signals`` of the 30-minute run against each of :data:`SIGNAL_ACCURACIES`
    (seconds: it reads records and the CSV log), its tables and plots copied to stable names."""
    folder = OUT / "signals-30min"
    if folder.is_dir():
        shutil.rmtree(folder)
    for accuracy, mode in SIGNAL_ACCURACIES:
        written = folder / (accuracy + (f"-{mode}" if mode else ""))
        run(JEPA_EVAL, "signals", str(run_dir("ijepa-30min")), "--records", str(OUT), "--results-dir", str(written),
            "--accuracy", accuracy, *(["--mode", mode] if mode else []), *DATA[:2])
        [table_file] = written.glob("*.md")
        for source in (table_file, table_file.with_suffix(".png")):
            shutil.copyfile(source, OUT / f"signals-30min-{written.name}{source.suffix}")


def summarise() -> None:
    table(training_rows(), "training")
    table(knn_rows(load_records(OUT / "knn")), "knn")
    records = load_records(OUT / "suite") if (OUT / "suite").is_dir() else []
    if records:
        compared, epochs = list(models()), list(epoch_models())
        table(suite_rows(records, compared), "suite")
        table(transfer_rows(records, compared), "transfer")
        if epochs:
            table(suite_rows(records, [*epochs, "ijepa-30min"]), "epochs")
    for name, folder in MONITORS.items():
        if not folder.is_dir():
            continue
        stem = "learning_curve" + folder.name.removeprefix("monitor")
        [monitor] = load_records(folder)
        curve = curve_rows(monitor)
        table(curve, stem)
        table(correlation_rows(curve), stem.replace("learning_curve", "rank_vs_knn"))
        if name == "ijepa-30min" and records:
            table(rank_vs_linear_rows(curve, records), "rank_vs_linear-30min")
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
    if not args.skip_suite:
        suite({**chosen, **epoch_models()})
    summarise()
    if (OUT / "suite").is_dir() and (OUT / "monitor-30min").is_dir():
        signals()


if __name__ == "__main__":
    try:
        main()
    except JepaEvalError as exc:
        sys.exit(f"error: {exc}")
