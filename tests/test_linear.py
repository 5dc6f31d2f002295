"""Linear probe: a grid of heads trained at once, chosen on held-out data, reported on eval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.linear import (LinearConfig, head_accuracies, linear_probe,
                                        stratified_split, train_heads)

SMALL = dict(learning_rates=(0.01, 0.1), weight_decays=(0.0,), batchnorm=(False, True),
             epochs=10, batch_size=32)


def blobs(seed: int, per_class: int, num_classes: int = 4, dim: int = 16, spread: float = 1.0,
          offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around far-apart centres (label = centre), shifted by ``offset``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 4.0
    labels = np.repeat(np.arange(num_classes), per_class)
    points = centres[labels] + spread * rng.normal(size=(labels.size, dim)) + offset
    return points.astype(np.float32), labels


def test_separable_blobs_are_classified_perfectly() -> None:
    x, y = blobs(0, per_class=60)
    x_eval, y_eval = blobs(0, per_class=20)
    result = linear_probe(x, y, x_eval, y_eval, LinearConfig(**SMALL), progress=False)
    top = {m.name: m for m in result.metrics if m.name in ("top1", "top5")}
    assert top["top1"].value == 100.0 and top["top5"].value == 100.0
    assert top["top1"].coords == {k: result.chosen[k] for k in ("lr", "wd", "batchnorm")}
    assert result.chosen["val_top1"] == 100.0
    assert result.selected_on == "val"
    assert result.sizes == {"fit": 216, "select": 24, "eval": 80}  # 10% of each class held out


def test_result_lists_every_head_of_the_grid_with_its_validation_top1() -> None:
    x, y = blobs(1, per_class=30)
    config = LinearConfig(learning_rates=(1e-3, 1e-1), weight_decays=(0.0, 5e-4),
                          batchnorm=(True, False), epochs=2, batch_size=32)
    result = linear_probe(x, y, x, y, config, progress=False)
    expected = [(bn, lr, wd) for bn in (False, True) for lr in (1e-3, 1e-1) for wd in (0.0, 5e-4)]
    assert [(g["batchnorm"], g["lr"], g["wd"]) for g in result.grid] == expected
    rows = [m for m in result.metrics if m.name == "val_top1"]
    assert [(m.coords, m.value) for m in rows] == [
        ({k: g[k] for k in ("lr", "wd", "batchnorm")}, g["val_top1"]) for g in result.grid]
    assert result.chosen["val_top1"] == max(g["val_top1"] for g in result.grid)


def test_heads_trained_together_end_where_each_would_end_alone() -> None:
    x, y = blobs(2, per_class=25, spread=3.0)
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    config = LinearConfig(learning_rates=(0.03, 0.3), weight_decays=(0.0, 0.01),
                          batchnorm=(False, True), epochs=3, batch_size=16)
    together = train_heads(features, labels, config, 4, progress=False)
    assert together.weight.shape == (8, 16, 4)
    for head, params in enumerate(config.grid()):
        alone_config = LinearConfig(learning_rates=(params["lr"],), weight_decays=(params["wd"],),
                                    batchnorm=(params["batchnorm"],), epochs=3, batch_size=16)
        alone = train_heads(features, labels, alone_config, 4, progress=False)
        torch.testing.assert_close(together.weight[head], alone.weight[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(together.bias[head], alone.bias[0], rtol=0, atol=1e-5)


def test_one_head_follows_torch_sgd_with_momentum_and_a_per_step_cosine() -> None:
    x, y = blobs(3, per_class=10, spread=3.0)
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    config = LinearConfig(learning_rates=(0.2,), weight_decays=(0.01,), batchnorm=(False,),
                          epochs=3, batch_size=8, momentum=0.9, seed=5)
    trained = train_heads(features, labels, config, 4, progress=False)
    # The same run written with nn.Linear and torch.optim.SGD (weight decay on the weight only).
    generator = torch.Generator().manual_seed(5)
    layer = torch.nn.Linear(16, 4)
    with torch.no_grad():
        layer.weight.copy_((torch.randn(16, 4, generator=generator) * 0.01).T)
        layer.bias.zero_()
    lr = 0.2 * 8 / 256
    sgd = torch.optim.SGD([{"params": [layer.weight], "weight_decay": 0.01},
                           {"params": [layer.bias], "weight_decay": 0.0}], lr=lr, momentum=0.9)
    total = 3 * (40 // 8)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        sgd, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    for _ in range(3):
        order = torch.randperm(40, generator=generator)
        for start in range(0, 40, 8):
            idx = order[start:start + 8]
            sgd.zero_grad()
            torch.nn.functional.cross_entropy(layer(features[idx]), labels[idx]).backward()
            sgd.step()
            schedule.step()
    torch.testing.assert_close(trained.weight[0], layer.weight.detach().T, rtol=0, atol=1e-5)
    torch.testing.assert_close(trained.bias[0], layer.bias.detach(), rtol=0, atol=1e-5)


def test_head_choice_never_looks_at_evaluation_labels() -> None:
    x, y = blobs(4, per_class=40, spread=4.0)
    x_eval, y_eval = blobs(5, per_class=20, spread=4.0)
    config = LinearConfig(learning_rates=(1e-4, 1e-2, 1.0), weight_decays=(0.0,),
                          batchnorm=(False, True), epochs=2, batch_size=32)
    honest = linear_probe(x, y, x_eval, y_eval, config, progress=False)
    scrambled = linear_probe(x, y, x_eval, np.random.default_rng(0).permutation(y_eval), config,
                             progress=False)
    assert scrambled.chosen == honest.chosen
    assert scrambled.grid == honest.grid
    assert len({g["val_top1"] for g in honest.grid}) > 1  # the heads really differ


def test_select_on_eval_trains_on_all_of_train_and_chooses_by_the_reported_split() -> None:
    x, y = blobs(6, per_class=30, spread=4.0)
    x_eval, y_eval = blobs(7, per_class=10, spread=4.0)
    config = LinearConfig(learning_rates=(1e-4, 1e-2, 1.0), weight_decays=(0.0,),
                          batchnorm=(False,), epochs=2, batch_size=32, select_on="eval")
    result = linear_probe(x, y, x_eval, y_eval, config, progress=False)
    assert result.selected_on == "eval"
    assert result.sizes == {"fit": 120, "select": 40, "eval": 40}
    top1 = next(m.value for m in result.metrics if m.name == "top1")
    assert top1 == result.chosen["val_top1"] == max(g["val_top1"] for g in result.grid)


def test_top5_is_at_least_top1_and_covers_all_of_fewer_than_five_classes() -> None:
    x, y = blobs(8, per_class=20, num_classes=8, spread=8.0)
    config = LinearConfig(learning_rates=(1e-3,), weight_decays=(0.0,), batchnorm=(False,),
                          epochs=1, batch_size=32)
    many = linear_probe(x, y, x, y, config, progress=False)
    values = {m.name: m.value for m in many.metrics}
    assert values["top5"] >= values["top1"]
    x3, y3 = blobs(9, per_class=20, num_classes=3, spread=8.0)
    few = {m.name: m.value for m in linear_probe(x3, y3, x3, y3, config, progress=False).metrics}
    assert few["top5"] == 100.0


def test_batchnorm_heads_normalise_with_running_statistics_at_evaluation() -> None:
    x, y = blobs(10, per_class=60, offset=50.0)  # far from zero mean
    features, labels = torch.from_numpy(x), torch.from_numpy(y)
    config = LinearConfig(learning_rates=(0.1,), weight_decays=(0.0,), batchnorm=(True,),
                          epochs=10, batch_size=32)
    heads = train_heads(features, labels, config, 4, progress=False)
    assert not heads.training
    torch.testing.assert_close(heads.norm.running_mean, features.mean(0), rtol=0, atol=1.0)
    top1, top5 = head_accuracies(heads, features, labels)
    assert top1.tolist() == [100.0] and top5.tolist() == [100.0]


def test_the_same_seed_gives_the_same_result_and_another_seed_another_split() -> None:
    x, y = blobs(11, per_class=30, spread=4.0)
    config = LinearConfig(learning_rates=(1e-2, 1e-1), weight_decays=(0.0,), batchnorm=(False,),
                          epochs=2, batch_size=16)
    first = linear_probe(x, y, x, y, config, progress=False)
    again = linear_probe(x, y, x, y, config, progress=False)
    assert first == again
    assert not np.array_equal(stratified_split(y, 0.1, 0)[1], stratified_split(y, 0.1, 1)[1])


def test_stratified_split_holds_out_the_fraction_of_every_class() -> None:
    labels = np.repeat(np.arange(5), [20, 20, 10, 30, 1])
    fit, held = stratified_split(labels, 0.1, seed=0)
    assert np.bincount(labels[held], minlength=5).tolist() == [2, 2, 1, 3, 0]
    assert np.intersect1d(fit, held).size == 0
    assert np.union1d(fit, held).tolist() == list(range(labels.size))
    np.testing.assert_array_equal(held, stratified_split(labels, 0.1, seed=0)[1])


def test_bad_inputs_and_settings_are_errors() -> None:
    x, y = blobs(12, per_class=10)
    with pytest.raises(JepaEvalError, match="select_on 'test'"):
        linear_probe(x, y, x, y, LinearConfig(select_on="test"), progress=False)
    with pytest.raises(JepaEvalError, match="val_fraction 0.0"):
        linear_probe(x, y, x, y, LinearConfig(val_fraction=0.0), progress=False)
    with pytest.raises(JepaEvalError, match="validation split .* is empty"):
        linear_probe(x, y, x, y, LinearConfig(val_fraction=0.01), progress=False)
    bad = x.copy()
    bad[3, 0] = np.inf
    with pytest.raises(JepaEvalError, match="eval features contain NaN or infinite"):
        linear_probe(x, y, bad, y, LinearConfig(**SMALL), progress=False)
    with pytest.raises(JepaEvalError, match="different widths"):
        linear_probe(x, y, x[:, :8], y, LinearConfig(**SMALL), progress=False)
