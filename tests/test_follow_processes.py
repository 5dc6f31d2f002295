"""The trainer in one process, ``jepa-eval monitor --follow`` in another, on the same folder: every
epoch measured exactly once, never a half-written state, while the trainer rewrites its latest
file in place the official way (a plain, slow, chunked ``torch.save``)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jepa_eval.results.record import load_records

REPO = Path(__file__).resolve().parents[1]

#: The training process: the bundled trainer with its atomic save swapped for the official plain
#: torch.save, written in 8 chunks 0.1 s apart. After the latest file of an epoch that has no ep
#: file it waits until the monitor's record holds that epoch, so that the next epoch does not
#: overwrite a state the monitor has not seen yet (the monitor cannot measure a state it never saw).
TRAINER = textwrap.dedent('''
    import io, json, sys, time
    from pathlib import Path
    import torch
    import ijepa.train as train
    from ijepa.config import config_from_dict

    torch.set_num_threads(1)
    cfg = config_from_dict(json.loads(Path(sys.argv[1]).read_text()))
    results, written = Path(sys.argv[2]), Path(sys.argv[3])

    def recorded(epoch):
        for path in results.glob("*.json"):
            rows = json.loads(path.read_text())["metrics"]
            if any(row.get("epoch") == epoch for row in rows):
                return True
        return False

    def plain_slow_save(path, **entries):
        buffer = io.BytesIO()
        torch.save(entries, buffer)
        data = buffer.getvalue()
        with open(path, "wb") as handle:
            for start in range(0, len(data), len(data) // 8 + 1):
                handle.write(data[start:start + len(data) // 8 + 1])
                handle.flush()
                time.sleep(0.1)
        with open(written, "a") as log:
            log.write(f"{entries['epoch']} {Path(path).name} {__import__('hashlib').sha256(data).hexdigest()}\\n")
        epoch = entries["epoch"]
        if "latest" in Path(path).name and epoch % cfg.run.checkpoint_freq:
            deadline = time.time() + 120
            while not recorded(epoch) and time.time() < deadline:
                time.sleep(0.2)
        return Path(path)

    train.save_checkpoint = plain_slow_save
    train.train(cfg, device="cpu", progress=False)
''')


@pytest.mark.slow
def test_monitor_follow_in_another_process_measures_each_epoch_once(tmp_path: Path) -> None:
    run, results = tmp_path / "run", tmp_path / "results"
    run.mkdir()
    config = {
        "data": {"batch_size": 32, "crop_size": 32, "num_workers": 0, "pin_mem": False},
        "logging": {"folder": str(run), "write_tag": "jepa"},
        "mask": {"patch_size": 8, "min_keep": 1, "num_pred_masks": 2, "pred_mask_scale": [0.2, 0.3]},
        "meta": {"model_name": "vit_tiny", "pred_depth": 1, "pred_emb_dim": 32, "use_bfloat16": False},
        "optimization": {"epochs": 4, "warmup": 1, "lr": 1e-3, "start_lr": 1e-4, "final_lr": 1e-5},
        "run": {"dataset": "digits", "embed_dim": 64, "depth": 2, "num_heads": 4, "device": "cpu",
                "checkpoint_freq": 2, "max_iters_per_epoch": 2},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "trainer.py").write_text(TRAINER)
    written = tmp_path / "written.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "JEPA_EVAL_CACHE": str(tmp_path / "cache")}
    monitor = subprocess.Popen(
        [sys.executable, "-m", "jepa_eval", "monitor", str(run), "--follow", "--until-epoch", "4", "--poll", "0.1",
         "--settle", "0", "--data", "digits", "--samples", "64", "--results-dir", str(results), "--quiet",
         "--device", "cpu"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trainer = subprocess.run([sys.executable, str(tmp_path / "trainer.py"), str(tmp_path / "config.json"),
                              str(results), str(written)], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=400)
    out, err = monitor.communicate(timeout=300)
    assert trainer.returncode == 0, trainer.stderr
    assert monitor.returncode == 0, err

    (record,) = load_records(results)
    points = {}
    for metric in record.metrics:
        points.setdefault(metric.coords["epoch"], metric.coords)
    assert sorted(points) == [1, 2, 3, 4]
    for epoch in (1, 2, 3, 4):  # the table's plain lines (stderr is a pipe): one per epoch
        assert err.count(f"epoch {epoch} (") == 1, err
    states = [line.split() for line in written.read_text().splitlines()]
    complete = {(int(epoch), sha) for epoch, _, sha in states}
    assert all((epoch, coords["ckpt_sha256"]) in complete for epoch, coords in points.items())
    # epoch 2 also has an ep file, written after its latest state: the point names the permanent
    # file (the monitor stopped at epoch 4 before the ep4 file came)
    ep2 = run / "jepa-ep2.pth.tar"
    assert points[2]["checkpoint"] == ep2.name
    assert points[2]["ckpt_sha256"] == hashlib.sha256(ep2.read_bytes()).hexdigest()
    with open(run / "jepa_r0.csv", newline="") as handle:
        losses = [(int(row["epoch"]), float(row["loss"])) for row in csv.DictReader(handle)]
    train_loss = {m.coords["epoch"]: m.value for m in record.metrics if m.name == "train_loss"}
    for epoch in (1, 2, 3, 4):
        mine = [loss for e, loss in losses if e == epoch]
        assert train_loss[epoch] == pytest.approx(sum(mine) / len(mine))
