"""jepa_eval.LiveMonitor inside a plain training loop: the loop's losses are identical with and without
it, its RNG states, module modes and gradients are left alone, and it writes monitor rows."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import jepa_eval
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.monitor import CollapseRule
from jepa_eval.protocols.rank import rankme
from jepa_eval.results.record import read_record

REPO = Path(__file__).resolve().parents[1]


class TinyEncoder(nn.Module):
    """Tokens [B, 4, 16] from 3 x 8 x 8 images: patchify, dropout, a BatchNorm'd linear map."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(48, 16)
        self.drop = nn.Dropout(0.3)
        self.norm = nn.BatchNorm1d(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], 4, 48)
        tokens = self.drop(self.proj(patches))
        return self.norm(tokens.reshape(-1, 16)).reshape(x.shape[0], 4, 16)


def held_out(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images whose class (0..2) is their one bright colour channel."""
    g = torch.Generator().manual_seed(5)
    labels = torch.arange(n) % 3
    colour = nn.functional.one_hot(labels, 3).float()[:, :, None, None]
    return colour + 0.1 * torch.randn(n, 3, 8, 8, generator=g), labels


def train(monitor: jepa_eval.LiveMonitor | None, steps: int = 12) -> list[float]:
    """A plain loop that draws from every RNG the monitor must not touch: torch (data, dropout),
    numpy (noise scale) and Python (a coin per step)."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    encoder, head = TinyEncoder(), nn.Linear(16, 1)
    optimizer = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=0.1)
    losses = []
    for step in range(1, steps + 1):
        images = torch.randn(8, 3, 8, 8) * float(np.random.uniform(0.5, 1.5))
        target = images.mean(dim=(1, 2, 3)) + (0.1 if random.random() < 0.5 else 0.0)
        loss = ((head(encoder(images).mean(dim=1)).squeeze(1) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        if monitor is not None:  # between backward and step: the gradients must survive it
            grads = [p.grad.clone() for p in encoder.parameters()]
            monitor.step(encoder, step, loss=loss.item())
            assert all(torch.equal(g, p.grad) for g, p in zip(grads, encoder.parameters()))
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_a_training_loop_has_the_same_losses_with_and_without_the_monitor(tmp_path: Path) -> None:
    images, labels = held_out()
    monitor = jepa_eval.LiveMonitor(data=(images, labels), bank=held_out(30), knn_k=5, every=3,
                                    out=tmp_path / "monitor.json", name="tiny")
    assert train(monitor) == train(None)  # bit for bit
    record = read_record(tmp_path / "monitor.json")
    assert sorted({m.coords["step"] for m in record.metrics}) == [3, 6, 9, 12]
    assert {"rankme", "alpha_req", "feature_std", "knn_top1", "train_loss"} <= {m.name for m in record.metrics}
    assert record.protocol == "monitor" and record.summary["axis"] == "step" and record.summary["measurements"] == 4


def test_the_rng_states_are_restored_even_when_the_encoder_draws_from_them() -> None:
    def noisy(x: torch.Tensor) -> torch.Tensor:
        np.random.rand()
        random.random()
        return x.mean(dim=(2, 3)) + 0.01 * torch.rand(x.shape[0], 3)

    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    jepa_eval.LiveMonitor(data=held_out()[0], every=1).step(noisy, 1)
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1]) and before[2] == random.getstate()


def test_the_monitor_leaves_every_submodules_mode_as_it_found_it() -> None:
    encoder = TinyEncoder().train()
    encoder.norm.eval()  # a frozen BatchNorm inside a training model
    monitor = jepa_eval.LiveMonitor(data=held_out()[0], every=1)
    before = encoder.norm.running_mean.clone()
    monitor.step(encoder, 1)
    assert encoder.training and encoder.drop.training and not encoder.norm.training
    assert torch.equal(before, encoder.norm.running_mean)  # measured in eval mode: statistics untouched


def test_the_values_are_those_of_the_pooled_held_out_features() -> None:
    images, labels = held_out()
    encoder = TinyEncoder().eval()
    values = jepa_eval.LiveMonitor(data=(images, labels), bank=held_out(30), knn_k=5).measure(encoder, 7)
    with torch.no_grad():
        pooled = encoder(images).mean(dim=1)
    assert values["rankme"] == pytest.approx(rankme(pooled), rel=1e-6)
    assert values["rankme_norm"] == pytest.approx(rankme(pooled) / 16, rel=1e-6)


def test_knn_reads_the_class_of_separable_features() -> None:
    images, labels = held_out()
    colour = lambda x: x.mean(dim=(2, 3))  # noqa: E731 - [B, 3]: the mean colour, i.e. the class
    values = jepa_eval.LiveMonitor(data=(images, labels), bank=held_out(30), knn_k=5).measure(colour, 1)
    assert values["knn_top1"] == 100.0
    assert "alpha_req" not in values  # 3 dimensions: too few for alpha-ReQ's fit range


def test_collapse_warns_calls_back_once_and_is_in_the_record(tmp_path: Path) -> None:
    alerts: list[tuple[int, str]] = []
    monitor = jepa_eval.LiveMonitor(data=held_out()[0], every=1, out=tmp_path, on_collapse=lambda s, r: alerts.append((s, r)))
    g = torch.Generator().manual_seed(0)
    monitor.step(lambda x: torch.randn(x.shape[0], 16, generator=g), 1)
    for step in (2, 3):
        with pytest.warns(RuntimeWarning, match=f"collapse at step {step}"):
            monitor.step(lambda x: torch.ones(x.shape[0], 16), step)
    assert [s for s, _ in alerts] == [2]
    (path,) = tmp_path.glob("*.json")
    record = read_record(path)
    assert record.summary["collapse_step"] == 2 and "RankMe" in record.summary["collapse_reason"]
    assert monitor.collapse == (2, record.summary["collapse_reason"])


def test_a_resumed_run_continues_the_record_and_replaces_the_steps_it_repeats(tmp_path: Path) -> None:
    out, images = tmp_path / "monitor.json", held_out()[0]
    encoder = TinyEncoder()
    first = jepa_eval.LiveMonitor(data=images, every=2, out=out)
    for step in (2, 4, 6):
        first.step(encoder, step)
    second = jepa_eval.LiveMonitor(data=images, every=2, out=out)  # resumed from the checkpoint of step 4
    second.step(encoder, 6)
    second.step(encoder, 8)
    record = read_record(out)
    assert record.run_id == first.record.run_id
    assert sorted({m.coords["step"] for m in record.metrics}) == [2, 4, 6, 8]
    assert sum(m.name == "rankme" for m in record.metrics) == 4


def test_bad_monitor_inputs_are_one_paragraph_errors() -> None:
    images, labels = held_out()
    with pytest.raises(JepaEvalError, match="every >= 1"):
        jepa_eval.LiveMonitor(data=images, every=0)
    with pytest.raises(JepaEvalError, match="labelled held-out images"):
        jepa_eval.LiveMonitor(data=images, bank=held_out(30))
    with pytest.raises(JepaEvalError, match="must be images"):
        jepa_eval.LiveMonitor(data=[1, 2, 3])
    with pytest.raises(JepaEvalError, match="knn_min_drop >= 0"):
        jepa_eval.LiveMonitor(data=images, rule=CollapseRule(knn_min_drop=-1))


def test_importing_jepa_eval_does_not_import_torch() -> None:
    code = "import sys, jepa_eval; assert 'torch' not in sys.modules; jepa_eval.LiveMonitor; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
