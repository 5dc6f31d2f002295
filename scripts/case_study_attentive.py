"""The attentive probe against the linear probe on the case-study encoders (results/case-study/).

    .venv/bin/python -m scripts.case_study_attentive                # the comparison (run from the repository root)
    .venv/bin/python -m scripts.case_study_attentive --tiny --out /tmp/attentive-check   # a check that it runs

On CIFAR-10 (the real photographs of ``../shared/data``, linked by scripts/case_study.py) for the
30-minute encoder's last checkpoint, a random encoder of its shape (``random:PATH``) and every
earlier saved epoch of that run, three probes on the same frozen encoder:

- ``jepa-eval linear --mode avgpool`` and ``--mode avgpool4`` (the default solver: exact logistic
  regression on standardised features, C chosen on 10% held-out train and refitted), on the case
  study's feature cache;
- ``jepa-eval attentive`` (the V-JEPA probe, heads = the encoder's 4) with a grid of 4 probes from
  V-JEPA 2's neighbourhood (lr 1e-3, 2e-3 x wd 1e-3, 4e-3) over the protocol's default 10 epochs,
  so that every saved epoch fits a CPU afternoon (V-JEPA 2 trains 20 probes for 20 epochs), on
  the last block's patch tokens, cached as float16 in ``.cache/case-study/tokens`` (about 1 GB a
  model, removed after each model unless ``--keep-tokens``).

Records go to ``OUT/attentive/`` (a model already there is skipped); ``OUT/attentive.md`` /
``.csv`` give one row per model with each probe's top-1 and seconds (the linear probe's record
wall time, its features extracted into the feature cache beforehand; the attentive probe's
training and scoring time, its token extraction apart) and the attentive gain over the better
linear probe;
``OUT/attentive_vs_linear.png`` (and .pdf, .csv) plots top-1 and probe seconds against epoch.

``--tiny`` runs the same on 100 training and 20 test photographs a class, the last checkpoint,
the random encoder and the first saved epoch, with 2 epochs and 2 probes: minutes on a CPU.
``--linear-from DIR`` takes the linear probes' records from a suite's folder (the case-study
suite runs the same default solver on the same checkpoints) instead of running them again;
their wall time then includes the feature extraction they did. ``--only NAME ...`` evaluates a
subset of the models.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.features.splits import ExtractOptions, split_features
from jepa_eval.report.plots import save_figure
from jepa_eval.results.record import ResultRecord, load_records
from scripts import case_study as cs

TOKENS = cs.CACHE / "tokens"
PROBES = {"linear avgpool": ("linear", "avgpool"), "linear avgpool4": ("linear", "avgpool4"),
          "attentive": ("attentive", "tokens")}
FULL = {"linear": [], "attentive": ["--lrs", "1e-3,2e-3", "--wds", "1e-3,4e-3"]}
TINY = {"linear": ["--epochs", "2"], "attentive": ["--epochs", "2", "--lrs", "1e-3,2e-3", "--wds", "1e-3"]}


def compared(tiny: bool) -> dict[str, tuple[str, int | None]]:
    """Name -> (checkpoint spec, epoch): the random encoder, every saved epoch, the last checkpoint."""
    saved = cs.saved_checkpoints("ijepa-30min")
    if not saved:
        raise SystemExit(f"no checkpoint in {cs.run_dir('ijepa-30min')}: run scripts/case_study.py first")
    final = saved[-1]
    earlier = saved[:1] if tiny else saved[:-1]
    return {"random-init": (f"random:{final}", None),
            **{f"ijepa-30min-ep{cs.epoch_of(c)}": (str(c), cs.epoch_of(c)) for c in earlier},
            "ijepa-30min": (str(final), cs.epoch_of(final))}


def tiny_cifar() -> Path:
    """The first 100 training and 20 test photographs of each class, linked as a CIFAR-10 copy."""
    root = cs.CACHE / "cifar10-tiny"
    for split, count in (("train", 100), ("test", 20)):
        for folder in sorted((cs.CIFAR / split).iterdir()):
            target = root / split / folder.name
            target.mkdir(parents=True, exist_ok=True)
            for image in sorted(folder.iterdir())[:count]:
                link = target / image.name
                if not link.exists():
                    link.symlink_to(image.resolve())
    return root


def cache_features(spec: str, data_root: Path, mode: str) -> None:
    """Extract the model's ``mode`` features of both splits into the case study's feature cache
    (a no-op when they are there), so that the linear probe's wall time is its own."""
    backbone = ModelSpec(ckpt=spec).load()
    options = ExtractOptions(data_root=str(data_root), cache_dir=str(cs.CACHE / "features"), progress=False)
    for split in ("train", "test"):
        split_features(backbone, "cifar10", split, mode, options)


def evaluate(models: dict[str, tuple[str, int | None]], data_root: Path, out: Path, settings: dict,
             keep_tokens: bool, linear_from: Path | None) -> None:
    """The three probes of every model not yet in ``out`` (nor, for the linear probes, in
    ``linear_from``)."""
    done = {(r.model.name, r.protocol, r.features.mode) for r in probe_records(out, linear_from)}
    for name, (spec, _) in models.items():
        common = ["--ckpt", spec, "--name", name, "--data", "cifar10", "--data-root", str(data_root), "--quiet",
                  "--results-dir", str(out)]
        for label, (protocol, mode) in PROBES.items():
            if (name, protocol, mode) in done:
                print(f"{name}: {label} done")
                continue
            if protocol == "linear":
                cache_features(spec, data_root, mode)
                cs.run(cs.JEPA_EVAL, "linear", *common, "--mode", mode, *settings["linear"],
                       "--cache-dir", str(cs.CACHE / "features"), threads="2")
            else:
                cs.run(cs.JEPA_EVAL, "attentive", *common, *settings["attentive"], "--cache-dir", str(TOKENS),
                       threads="2")
                if not keep_tokens:
                    shutil.rmtree(TOKENS, ignore_errors=True)


def probe_records(out: Path, linear_from: Path | None) -> list[ResultRecord]:
    """The records of ``out`` and the CIFAR-10 linear records of ``linear_from`` (a suite's
    folder, not its transfer entries)."""
    records = load_records(out) if out.is_dir() else []
    if linear_from is not None:
        records += [r for r in load_records(linear_from)
                    if r.protocol == "linear" and r.dataset.name == "cifar10" and not r.k_shot]
    return records


def probe_seconds(record: ResultRecord) -> float:
    """Seconds the probe took: the attentive probe's own time, else the record's wall time."""
    return float(record.summary.get("probe_seconds", record.wall_time_s))


def comparison_rows(records: list[ResultRecord], models: dict[str, tuple[str, int | None]]) -> list[dict]:
    """One row per model: each probe's top-1 and seconds, and the attentive gain over the better linear."""
    rows = []
    for name, (_, epoch) in models.items():
        mine = {(r.protocol, r.features.mode): r for r in records if r.model.name == name}
        if not all(key in mine for key in PROBES.values()):
            continue
        row: dict[str, object] = {"model": name, "epoch": "-" if epoch is None else epoch}
        for label, key in PROBES.items():
            row[f"{label} top-1"] = round(mine[key].summary["top1"], 2)
            row[f"{label} s"] = round(probe_seconds(mine[key]), 1)
        attentive = mine[("attentive", "tokens")]
        row["token extraction s"] = round(attentive.wall_time_s - probe_seconds(attentive), 1)
        best_linear = max(row["linear avgpool top-1"], row["linear avgpool4 top-1"])
        row["attentive - best linear"] = round(row["attentive top-1"] - best_linear, 2)
        rows.append(row)
    return rows


def plot(rows: list[dict], out: Path, linear_times: str) -> list[Path]:
    """Top-1 and probe seconds against epoch, one line per probe; the random encoder dashed.
    ``linear_times`` says what the linear probes' seconds include, for the time panel's title."""
    frame = pd.DataFrame(rows)
    trained = frame[frame["epoch"] != "-"].astype({"epoch": int}).sort_values("epoch")
    random = frame[frame["epoch"] == "-"]
    fig = Figure(figsize=(11, 4), dpi=150)
    FigureCanvasAgg(fig)
    accuracy, seconds = fig.subplots(1, 2)
    for index, label in enumerate(PROBES):
        colour = f"C{index}"
        accuracy.plot(trained["epoch"], trained[f"{label} top-1"], marker="o", color=colour, label=label)
        seconds.plot(trained["epoch"], trained[f"{label} s"], marker="o", color=colour, label=label)
        if not random.empty:
            accuracy.axhline(float(random[f"{label} top-1"].iloc[0]), color=colour, linestyle="--", linewidth=1,
                             label=f"{label}, random encoder")
    accuracy.set(xlabel="epoch of the 30-minute run", ylabel="CIFAR-10 top-1 (%)",
                 title="attentive vs linear probes, same frozen encoder")
    seconds.set(xlabel="epoch of the 30-minute run", ylabel="probe seconds",
                title=f"time each probe took (attentive: token extraction apart; linear: {linear_times})")
    accuracy.legend(fontsize=7)
    seconds.legend(fontsize=7)
    for ax in (accuracy, seconds):
        ax.grid(alpha=0.3)
    return save_figure(fig, frame, out / "attentive_vs_linear")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="100 + 20 photographs a class, 3 models, 2 epochs")
    parser.add_argument("--out", type=Path, default=cs.OUT, help="folder of the tables, plot and records")
    parser.add_argument("--keep-tokens", action="store_true", help="keep each model's cached patch tokens")
    parser.add_argument("--linear-from", type=Path, default=None,
                        help="a suite's records folder whose CIFAR-10 linear records (same default solver) are used "
                             "instead of running the linear probes again; their wall time includes any feature "
                             "extraction they did")
    parser.add_argument("--only", nargs="+", default=None, help="evaluate only these models (names as in the table)")
    args = parser.parse_args()
    cs.link_data()
    models = compared(args.tiny)
    if args.only:
        unknown = sorted(set(args.only) - set(models))
        if unknown:
            raise SystemExit(f"--only names {unknown}, expected some of {sorted(models)}")
        models = {name: models[name] for name in models if name in args.only}
    torch.set_num_threads(2)  # for cache_features, as the commands run with two threads
    root = tiny_cifar() if args.tiny else cs.CIFAR
    records_dir = args.out / "attentive"
    evaluate(models, root, records_dir, TINY if args.tiny else FULL, args.keep_tokens, args.linear_from)
    rows = comparison_rows(probe_records(records_dir, args.linear_from), models)
    cs.table(rows, "attentive", args.out)
    if rows:
        plot(rows, args.out, "the suite's record, feature extraction included" if args.linear_from
             else "feature extraction apart")


if __name__ == "__main__":
    main()
