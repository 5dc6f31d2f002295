"""Specifications of the attentive probe on token arrays: architectures against independent
re-implementations of the references, batched grid training, selection, errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from reference_probes import our_layout, reference_probe, train_reference

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.features.tokens import TokenArray
from jepa_eval.protocols.attentive import AttentiveConfig, attentive_probe_arrays
from jepa_eval.protocols.attentive_probes import VARIANTS, AttentiveProbe, ProbeGrid, make_arch, parameter_count
from jepa_eval.protocols.attentive_training import TrainedGrid, lr_at, train_probe_grid, wd_at
from jepa_eval.protocols.linear import LinearConfig, linear_probe


def small_arch_kwargs(variant: str) -> dict:
    """Small architectures: 2 heads (ep: one head, 4 queries), one self-attention block (vjepa2)."""
    return {"heads": None, "queries": 4} if variant == "ep" else {"heads": 2, "queries": None}


def train_grid(config: AttentiveConfig, batches, dim: int, classes: int) -> TrainedGrid:
    """The grid of ``config`` trained on ``batches`` on the CPU, as the protocol trains it."""
    probes = ProbeGrid(config.arch(dim, classes), len(config.grid()), config.seed)
    return train_probe_grid(probes, batches, config.optimisation(), torch.device("cpu"))


def shuffled(tokens: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
    """Training batches of every row (seeded permutations, full batches)."""
    return TokenArray(tokens, labels).batches(np.arange(len(labels)), batch_size, train=True, seed=seed)


def random_tokens(n: int, length: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, length, dim)).astype(np.float32), rng.permutation(np.arange(n) % classes)


def flagged_tokens(n: int, seed: int, classes: int = 4, length: int = 6,
                   dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Every sample holds each class direction e_k (dims 0..K-1) once, at random positions, plus
    noise tokens; the token of the label's direction also carries a flag (dim K). The mean over
    tokens is (sum_k e_k + flag) / T + noise whatever the label: mean pooling sees no class."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % classes)
    tokens = rng.normal(0.0, 0.1, (n, length, dim))
    positions = np.argsort(rng.random((n, length)), axis=1)[:, :classes]  # [N, K] distinct
    tokens[np.arange(n)[:, None], positions, np.arange(classes)] += 1.0
    tokens[np.arange(n), positions[np.arange(n), labels], classes] += 2.0
    return tokens.astype(np.float16), labels


# -- architectures -------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dim,heads", [(192, 3), (384, 6), (1024, 16)])
def test_parameter_count_equals_the_reference(variant: str, dim: int, heads: int) -> None:
    arch = make_arch(variant, dim, 1000, heads=None if variant == "ep" else heads)
    with torch.device("meta"):
        reference = reference_probe(variant, dim, 1000, arch.heads, arch.queries, arch.self_blocks)
    assert parameter_count(arch) == sum(p.numel() for p in reference.parameters())


def test_parameter_count_at_vit_l_by_hand() -> None:
    """D = 1024, 16 heads, 1000 classes; the classifier is (D + 1) x 1000 = 1,025,000."""
    d, head = 1024, 1025 * 1000
    cross = 12 * d * d + 14 * d  # q, kv, proj, fc1, fc2 matrices + biases, 2 LayerNorms, query
    block = 12 * d * d + 13 * d  # qkv, proj, fc1, fc2 + biases, 2 LayerNorms
    expected = {"vjepa": cross + head, "vjepa2": 3 * block + cross - (d * d + d) + head,
                "capi": d + 2 * d * d + 2 * d + head, "ep": 32 * d + d * d + head}
    assert {v: parameter_count(make_arch(v, d, 1000)) for v in VARIANTS} == expected
    assert expected["vjepa"] == 13_622_248 and expected["vjepa2"] == 50_361_320


@pytest.mark.parametrize("variant", VARIANTS)
def test_built_probe_has_the_counted_parameters(variant: str) -> None:
    arch = make_arch(variant, 192, 10, **small_arch_kwargs(variant))
    assert sum(p.numel() for p in AttentiveProbe(arch).parameters()) == parameter_count(arch)


@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_equal_the_reference_with_copied_weights(variant: str) -> None:
    """Random weights everywhere (biases and LayerNorms too) so that every term is exercised; ep in
    train mode (batch statistics) and then eval mode (the running statistics both updated)."""
    arch = make_arch(variant, 48, 7, self_blocks=2, **(
        {"queries": 4} if variant == "ep" else {"heads": 3}))
    reference = reference_probe(variant, 48, 7, arch.heads, arch.queries, arch.self_blocks)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in reference.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    copied = {name: view.detach().clone() for name, view in our_layout(variant, reference).items()}
    probe = AttentiveProbe(arch, init=copied)
    tokens = torch.randn(5, 9, 48, generator=generator)
    for train in (True, False):
        reference.train(train)
        probe.train(train)
        torch.testing.assert_close(probe(tokens), reference(tokens), rtol=1e-5, atol=2e-5)


def test_grid_outputs_are_each_probes_own() -> None:
    """Probe h of a grid computes what probe h alone computes, for every variant's batched path."""
    for variant in VARIANTS:
        arch = make_arch(variant, 24, 3, self_blocks=1, **small_arch_kwargs(variant))
        grid = ProbeGrid(arch, 3)
        with torch.no_grad():
            for param in grid.parameters():
                param.add_(0.1 * torch.randn(param.shape, generator=torch.Generator().manual_seed(2)))
        tokens = torch.randn(6, 5, 24)
        logits = grid(tokens)
        for h in range(3):
            torch.testing.assert_close(logits[h], grid.probe(h)(tokens), rtol=1e-5, atol=1e-6)


# -- schedules and training ---------------------------------------------------------------------

def test_schedules_by_hand() -> None:
    """10 steps, 4 of warm-up from 0.1 to 1.0, then a cosine to 0 (V-JEPA counts steps from 1)."""
    lr = torch.tensor([1.0], dtype=torch.float64)
    values = [float(lr_at(s, 10, 4, 0.1, lr, 0.0)) for s in (1, 2, 3, 4, 7, 10)]
    assert values == pytest.approx([0.325, 0.55, 0.775, 1.0, 0.5, 0.0], abs=1e-12)
    wd = torch.tensor([1e-2], dtype=torch.float64)
    assert float(wd_at(5, 10, wd, 0.0)) == pytest.approx(5e-3)
    assert float(wd_at(10, 10, wd, 1e-4)) == pytest.approx(1e-4)
    assert float(wd_at(7, 10, wd, None)) == 1e-2


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_equals_the_reference_loop_with_torch_adamw(variant: str) -> None:
    """Our batched AdamW / clipping / schedules / decay groups on one probe end where V-JEPA's plain
    loop (torch.optim.AdamW, clip_grad_norm_, its schedulers) ends from the same weights and
    batches. Clipping is active (max norm 0.05), the weight decay follows a cosine, betas are
    CAPI's. The key bias is left out: it cannot change the output, so ours gets no gradient while
    the reference's gets a rounding-level one that Adam turns into a small drift."""
    tokens, labels = random_tokens(64, 5, 24, 3, seed=4)
    config = AttentiveConfig(variant=variant, self_attention_blocks=1, learning_rates=(3e-3,),
                             weight_decays=(0.05,), final_weight_decay=1e-3, start_lr=1e-4,
                             warmup_fraction=1 / 3, epochs=3, batch_size=16, grad_clip=0.05,
                             betas=(0.9, 0.95), seed=5, **small_arch_kwargs(variant))
    batches = shuffled(tokens, labels, 16, seed=6)
    ours = train_grid(config, batches, 24, 3).probes
    arch = config.arch(24, 3)
    initial = AttentiveProbe(arch, seed=5).requires_grad_(False)
    reference = reference_probe(variant, 24, 3, arch.heads, arch.queries, arch.self_blocks)
    with torch.no_grad():
        for name, view in our_layout(variant, reference).items():
            view.copy_(initial.get_parameter(name)[0])
    train_reference(reference, batches, 3, lr=3e-3, wd=0.05, start_lr=1e-4, final_lr=0.0,
                    warmup_steps=len(batches), final_wd=1e-3, betas=(0.9, 0.95), clip=0.05)
    moved = 0.0
    for name, view in our_layout(variant, reference).items():
        if name.endswith("k_b"):
            continue
        torch.testing.assert_close(ours.get_parameter(name)[0], view.detach(), rtol=1e-4, atol=2e-5)
        moved = max(moved, float((view.detach() - initial.get_parameter(name)[0]).abs().max()))
    assert moved > 1e-3  # the probes did train
    if variant == "ep":
        torch.testing.assert_close(ours.bn_mean[0], reference.bn.running_mean)
        torch.testing.assert_close(ours.bn_var[0], reference.bn.running_var)


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_probe_trained_in_a_grid_ends_where_it_ends_alone(variant: str) -> None:
    """Up to float rounding: 1e-5 absolute, since a key bias (vjepa2's self-attention qkv) has an
    exactly-zero gradient in exact arithmetic, so Adam turns rounding-level gradients into steps
    of about lr x 1e-2; any leak between probes would move them by about lr (1e-3 .. 1e-2)."""
    tokens, labels = random_tokens(96, 5, 24, 3, seed=7)
    config = AttentiveConfig(variant=variant, self_attention_blocks=1, learning_rates=(1e-3, 1e-2),
                             weight_decays=(0.0, 0.05), epochs=2, batch_size=16, warmup_fraction=0.5,
                             grad_clip=0.5, **small_arch_kwargs(variant))
    batches = shuffled(tokens, labels, 16, seed=8)
    grid = train_grid(config, batches, 24, 3)
    assert grid.steps == 12
    assert not torch.allclose(grid.probes.head_w[0], grid.probes.head_w[3])  # they differ
    for h in (1, 3):
        point = config.grid()[h]
        alone = train_grid(replace(config, learning_rates=(point["lr"],), weight_decays=(point["wd"],)),
                           batches, 24, 3)
        for name, param in grid.probes.named_parameters():
            torch.testing.assert_close(param[h], alone.probes.get_parameter(name)[0], rtol=1e-4, atol=1e-5)
        for name, buffer in grid.probes.named_buffers():
            torch.testing.assert_close(buffer[h], alone.probes.get_buffer(name)[0])
        assert grid.train_loss[h] == pytest.approx(alone.train_loss[0], rel=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_attentive_probe_finds_the_flagged_token_that_mean_pooling_cannot_see(variant: str) -> None:
    train_x, train_y = flagged_tokens(1000, seed=0)
    eval_x, eval_y = flagged_tokens(400, seed=1)
    config = AttentiveConfig(variant=variant, self_attention_blocks=1, learning_rates=(3e-3, 1e-2),
                             weight_decays=(1e-3,), epochs=20, batch_size=50, warmup_fraction=0.05,
                             **small_arch_kwargs(variant))
    result = attentive_probe_arrays(train_x, train_y, eval_x, eval_y, config)
    assert result.top1 >= 95.0
    assert result.sizes == {"fit": 900, "select": 100, "eval": 400}
    mean_pooled = linear_probe(train_x.astype(np.float32).mean(axis=1), train_y,
                               eval_x.astype(np.float32).mean(axis=1), eval_y,
                               LinearConfig(epochs=20, batch_size=50, learning_rates=(0.01, 0.1, 1.0),
                                            weight_decays=(0.0,)), progress=False)
    assert mean_pooled.metrics[0].value <= 25.0 + 8.0  # chance is 25%; 400 samples: std 2.2 points


def test_result_reports_the_chosen_probe_and_the_whole_grid() -> None:
    train_x, train_y = flagged_tokens(400, seed=2)
    eval_x, eval_y = flagged_tokens(100, seed=3)
    config = AttentiveConfig(learning_rates=(1e-3, 1e-2), weight_decays=(0.0, 1e-3), epochs=3,
                             batch_size=40, warmup_fraction=0, heads=2)
    result = attentive_probe_arrays(train_x, train_y, eval_x, eval_y, config)
    best = int(np.argmax([p["val_top1"] for p in result.grid]))
    assert result.chosen == result.grid[best]
    assert [m.name for m in result.metrics] == ["top1", "top5"] + ["val_top1"] * 4 + ["train_loss"] * 4
    assert result.metrics[0].coords == {"lr": result.chosen["lr"], "wd": result.chosen["wd"]}
    assert [m.value for m in result.metrics[-4:]] == [p["train_loss"] for p in result.grid]
    assert result.top1 == result.metrics[0].value and result.top5 == 100.0  # 4 classes: top-5 = all
    assert result.steps == 3 * (360 // 40)
    eval_logits = result.probe(torch.from_numpy(eval_x.astype(np.float32)))
    assert 100.0 * float((eval_logits.argmax(1).numpy() == eval_y).mean()) == pytest.approx(result.top1)


def test_selection_ties_go_to_the_first_probe_in_grid_order() -> None:
    """Learning rates too small to move any prediction: every probe scores the same."""
    train_x, train_y = flagged_tokens(200, seed=4)
    for rates in ((1e-12, 2e-12), (2e-12, 1e-12)):
        config = AttentiveConfig(learning_rates=rates, weight_decays=(0.0,), epochs=1,
                                 batch_size=50, warmup_fraction=0, heads=2, start_lr=0.0)
        result = attentive_probe_arrays(train_x, train_y, train_x[:50], train_y[:50], config)
        assert result.grid[0]["val_top1"] == result.grid[1]["val_top1"]
        assert result.chosen["lr"] == rates[0]


def test_select_on_eval_chooses_on_the_evaluation_split() -> None:
    train_x, train_y = flagged_tokens(300, seed=5)
    eval_x, eval_y = flagged_tokens(100, seed=6)
    config = AttentiveConfig(learning_rates=(1e-4, 1e-2), weight_decays=(0.0,), epochs=4,
                             batch_size=50, warmup_fraction=0, heads=2, select_on="eval")
    result = attentive_probe_arrays(train_x, train_y, eval_x, eval_y, config)
    assert result.selected_on == "eval" and result.sizes == {"fit": 300, "select": 100, "eval": 100}
    assert result.chosen["val_top1"] == result.top1 == max(p["val_top1"] for p in result.grid)


def test_same_seed_same_result_other_seed_other_start() -> None:
    train_x, train_y = flagged_tokens(200, seed=7)
    config = AttentiveConfig(learning_rates=(1e-2,), weight_decays=(1e-3,), epochs=2, batch_size=25,
                             warmup_fraction=0, variant="ep", queries=4)
    first, second = (attentive_probe_arrays(train_x, train_y, train_x, train_y, config) for _ in range(2))
    assert first.grid == second.grid
    for (name, a), b in zip(first.probe.state_dict().items(), second.probe.state_dict().values()):
        assert torch.equal(a, b), name
    arch = config.arch(16, 4)
    assert not torch.equal(AttentiveProbe(arch, seed=0).query, AttentiveProbe(arch, seed=1).query)
    batches = [shuffled(train_x, train_y, 25, seed=s) for s in (0, 1)]
    assert not torch.equal(next(batches[0].epoch(0))[1], next(batches[1].epoch(0))[1])


# -- batches -------------------------------------------------------------------------------------

def test_array_batches_read_float16_memory_maps_as_float32_permutations(tmp_path) -> None:
    stored = np.memmap(tmp_path / "tokens.f16", dtype=np.float16, mode="w+", shape=(20, 3, 4))
    stored[:] = np.arange(240, dtype=np.float16).reshape(20, 3, 4)
    stored.flush()
    tokens = np.memmap(tmp_path / "tokens.f16", dtype=np.float16, mode="r", shape=(20, 3, 4))
    labels = np.arange(20) % 5
    rows = np.arange(3, 17)  # 14 rows: 3 full batches of 4, 2 rows dropped each epoch
    batches = TokenArray(tokens, labels).batches(rows, 4, train=True, seed=9)
    assert len(batches) == 3
    orders = []
    for epoch in (0, 1):
        seen = []
        for x, y in batches.epoch(epoch):
            assert x.dtype == torch.float32 and x.shape == (4, 3, 4) and y.dtype == torch.int64
            index = (x[:, 0, 0] / 12).long().numpy()  # row r starts at 12 r
            np.testing.assert_array_equal(x.numpy(), np.asarray(stored[index], dtype=np.float32))
            np.testing.assert_array_equal(y.numpy(), labels[index])
            seen += index.tolist()
        assert len(set(seen)) == 12 and set(seen) <= set(rows.tolist())
        orders.append(seen)
    assert orders[0] != orders[1]
    assert [y.tolist() for _, y in batches.epoch(1)] == [y.tolist() for _, y in batches.epoch(1)]
    in_order = TokenArray(tokens, labels).batches(np.arange(20), 8, train=False)
    assert [len(y) for _, y in in_order] == [8, 8, 4]
    assert torch.cat([y for _, y in in_order]).tolist() == labels.tolist()


def test_each_torchrun_process_reads_its_share_of_every_batch() -> None:
    """Two processes: rank r gets rows r::2 of each global batch, so together they read it once."""
    tokens, labels = random_tokens(30, 2, 3, 3, seed=1)
    source = TokenArray(tokens, labels)
    whole = [y.tolist() for _, y in source.batches(np.arange(30), 8, train=True, seed=4).epoch(2)]
    halves = [[y.tolist() for _, y in source.batches(np.arange(30), 8, train=True, seed=4,
                                                     shard=(rank, 2)).epoch(2)] for rank in (0, 1)]
    assert len(whole) == 3 and [len(b) for b in halves[0]] == [4, 4, 4]
    for batch, first, second in zip(whole, *halves):
        assert first == batch[0::2] and second == batch[1::2]


# -- bad input -----------------------------------------------------------------------------------

def test_pooled_features_are_refused_as_having_no_patch_tokens() -> None:
    features = np.zeros((10, 16), dtype=np.float32)
    with pytest.raises(JepaEvalError, match="no patch tokens"):
        attentive_probe_arrays(features, np.arange(10) % 2, features, np.arange(10) % 2)


def test_a_grid_of_zero_probes_is_refused() -> None:
    tokens, labels = random_tokens(20, 3, 8, 2, seed=0)
    with pytest.raises(JepaEvalError, match="zero probes"):
        attentive_probe_arrays(tokens, labels, tokens, labels, AttentiveConfig(learning_rates=()))


def test_a_held_out_split_missing_a_class_of_train_is_refused_before_training() -> None:
    """Class 2 has 3 training samples: 10% of 3 rounds to none held out."""
    tokens, _ = random_tokens(43, 3, 8, 3, seed=0)
    labels = np.array([0] * 20 + [1] * 20 + [2] * 3)
    with pytest.raises(JepaEvalError, match="misses classes of train") as error:
        attentive_probe_arrays(tokens, labels, tokens, labels, AttentiveConfig(heads=2))
    assert "[2]" in str(error.value)


@pytest.mark.parametrize("change,message", [
    ({"heads": 5}, "do not divide"),
    ({"variant": "ep", "queries": 3}, "do not divide"),
    ({"variant": "nope"}, "invalid attentive-probe settings"),
    ({"select_on": "test"}, "invalid attentive-probe settings"),
    ({"block_pooling": "max"}, "invalid attentive-probe settings"),
    ({"warmup_fraction": 1.5}, "invalid attentive-probe settings"),
])
def test_invalid_settings_are_refused(change: dict, message: str) -> None:
    tokens, labels = random_tokens(40, 3, 8, 2, seed=0)
    with pytest.raises(JepaEvalError, match=message):
        attentive_probe_arrays(tokens, labels, tokens, labels, AttentiveConfig(**change))


def test_mismatched_inputs_are_refused() -> None:
    tokens, labels = random_tokens(40, 3, 8, 2, seed=0)
    with pytest.raises(JepaEvalError, match="differ in shape"):
        attentive_probe_arrays(tokens, labels, tokens[:, :, :4], labels)
    with pytest.raises(JepaEvalError, match="do not match"):
        attentive_probe_arrays(tokens, labels[:30], tokens, labels)
    bad = tokens.copy()
    bad[3, 1, 2] = np.nan
    with pytest.raises(JepaEvalError, match="NaN"):
        attentive_probe_arrays(bad, labels, tokens, labels, AttentiveConfig(select_on="eval", heads=2))
