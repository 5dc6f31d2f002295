"""Attentive probes: learned queries cross-attend to frozen patch tokens, a linear layer classifies.

Every probe maps tokens [B, T, D] to logits [B, C]. Four architectures, each as its reference
builds it (the classifier reads the query outputs, concatenated when there are several):

- ``vjepa`` (V-JEPA, facebookresearch/jepa ``AttentiveClassifier``, depth 1): ``Q`` learned
  queries (1 by default); one cross-attention block: LayerNorm on the tokens, q Linear (on the
  query) and kv Linear with bias, ``heads`` heads, output projection, residual on the query,
  then LayerNorm + GELU MLP (ratio 4) residual; then Linear(Q*D, C).
- ``vjepa2`` (V-JEPA 2, facebookresearch/vjepa2, ``num_probe_blocks`` 4): ``self_blocks`` (3)
  pre-norm ViT blocks (qkv with bias) over ALL tokens, then the same cross-attention block
  WITHOUT the output projection (V-JEPA 2's ``CrossAttention`` has none); then Linear.
- ``capi`` (facebookresearch/capi ``AttnPoolClassifier``): the query used directly (no q
  projection, no norm, no MLP), kv Linear with bias, D/64 heads by convention; then Linear.
- ``ep`` (efficient probing, billpsomas/efficient-probing ``EfficientProbing``): ``Q`` queries
  (32) with NO q/k projections and one head: query j attends with softmax_t(q_j . x_t / sqrt(D))
  and reads its own D/Q-channel slice of a bias-free value projection ``x W_v``; the Q slices are
  concatenated (D channels), then BatchNorm1d(affine=False, eps=1e-6) and Linear(D, C).

Initialisation follows each reference: V-JEPA's poolers draw Linear weights and queries from a
normal with std 0.02 truncated at +-2 (absolute bounds, as their ``trunc_normal_``), zero
biases, LayerNorm (1, 0), and divide the output-projection / fc2 weights by sqrt(2 x layer)
(``_rescale_blocks``); their classifier keeps PyTorch's nn.Linear default (uniform +-1/sqrt(in)).
CAPI: truncated normal 0.02 for the query and both Linears, zero biases. EP: queries
N(0, 0.02^2), value and classifier PyTorch's nn.Linear default.

Batched layout: :class:`ProbeGrid` holds H probes of one architecture as stacked parameters
(leading dimension H; matrices stored [in, out]) and computes all of them in one pass,
returning logits [H, B, C]. :class:`AttentiveProbe` is a grid of one that returns [B, C].

Factorised attention (exact, and what makes a grid cheap): for a query head q_j with key
weights W_k,j, the score of token t is q_j . (W_k,j^T LN(x_t) + b_k,j); the bias term is the same
for every token so the softmax ignores it, and with LN(x) = gamma * xhat + beta the score is
xhat_t . (gamma * W_k,j q_j) up to such a constant. Likewise the attention weights sum to 1, so
the head's output sum_t a_t (W_v,j^T LN(x_t) + b_v,j) = W_v,j^T (gamma * sum_t a_t xhat_t + beta)
+ b_v,j. So the keys and values of the T tokens are never formed: every probe and head needs one
D-vector u = gamma * W_k,j q_j, the scores xhat @ u, and one weighted token mean; xhat (the tokens
normalised without affine) is computed once per batch and shared by all H probes. The token-side
cost is O(B T D x H x heads x Q) instead of O(B T D^2 x H). The key bias never reaches the output,
so it gets no gradient (in the references its gradient is zero up to rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jepa_eval.core.errors import JepaEvalError

VARIANTS = ("vjepa", "vjepa2", "capi", "ep")
DEFAULT_QUERIES = {"vjepa": 1, "vjepa2": 1, "capi": 1, "ep": 32}
INIT_STD = 0.02
LN_EPS = 1e-5  # nn.LayerNorm's default, as the V-JEPA probes use it
BN_EPS = 1e-6  # efficient probing's BatchNorm1d(affine=False, eps=1e-6)
BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class ProbeArch:
    """One probe's architecture. ``self_blocks`` is used by ``vjepa2`` only."""

    variant: str
    dim: int
    num_classes: int
    heads: int
    queries: int
    mlp_ratio: float = 4.0
    self_blocks: int = 3

    @property
    def hidden(self) -> int:
        """Width of the MLP hidden layer."""
        return int(self.dim * self.mlp_ratio)

    @property
    def features(self) -> int:
        """Width of the classifier input: D for ``ep``, Q x D otherwise."""
        return self.dim if self.variant == "ep" else self.queries * self.dim


def make_arch(variant: str, dim: int, num_classes: int, heads: int | None = None,
              queries: int | None = None, mlp_ratio: float = 4.0, self_blocks: int = 3) -> ProbeArch:
    """A checked :class:`ProbeArch`; ``heads`` defaults to max(1, D // 64) (``ep``: 1), ``queries``
    to the variant's (1, or 32 for ``ep``)."""
    if variant not in VARIANTS:
        raise JepaEvalError("unknown attentive-probe variant", expected=f"one of {VARIANTS}",
                            found=repr(variant))
    if heads is None:
        heads = 1 if variant == "ep" else max(1, dim // 64)
    if queries is None:
        queries = DEFAULT_QUERIES[variant]
    problems = []
    if dim < 1 or num_classes < 1 or heads < 1 or queries < 1:
        problems.append(f"dim {dim}, classes {num_classes}, heads {heads}, queries {queries}")
    elif dim % heads:
        problems.append(f"{heads} heads do not divide the token width {dim}")
    if variant == "ep" and heads != 1:
        problems.append(f"ep with {heads} heads (efficient probing has one)")
    if variant == "ep" and queries >= 1 and dim % queries:
        problems.append(f"ep with {queries} queries that do not divide the token width {dim}")
    if variant == "vjepa2" and self_blocks < 0:
        problems.append(f"{self_blocks} self-attention blocks")
    if int(dim * mlp_ratio) < 1:
        problems.append(f"mlp_ratio {mlp_ratio}")
    if problems:
        raise JepaEvalError(f"invalid {variant} attentive-probe architecture",
                            expected="positive sizes, heads dividing the token width (ep: one head "
                                     "and queries dividing the width), a positive MLP width",
                            found="; ".join(problems))
    return ProbeArch(variant, dim, num_classes, heads, queries, mlp_ratio, self_blocks)


@dataclass(frozen=True)
class ParamSpec:
    """One probe's parameter: its shape (matrices [in, out]), initialisation and weight decay.

    ``init``: 'trunc' (normal std 0.02 truncated at +-2), 'normal' (std 0.02), 'uniform'
    (+-1/sqrt(fan_in), PyTorch's nn.Linear default), 'zeros' or 'ones'; the drawn values are then
    divided by ``rescale``.
    """

    name: str
    shape: tuple[int, ...]
    init: str
    decay: bool
    fan_in: int = 0
    rescale: float = 1.0


def _linear_specs(name: str, fan_in: int, fan_out: int, init: str, *, bias: bool = True,
                  rescale: float = 1.0) -> list[ParamSpec]:
    """Weight [in, out] and bias [out]; 'trunc' weights get zero biases, 'uniform' ones uniform."""
    specs = [ParamSpec(f"{name}_w", (fan_in, fan_out), init, True, fan_in, rescale)]
    if bias:
        specs.append(ParamSpec(f"{name}_b", (fan_out,), "zeros" if init == "trunc" else init,
                               False, fan_in))
    return specs


def _norm_specs(name: str, dim: int) -> list[ParamSpec]:
    return [ParamSpec(f"{name}_w", (dim,), "ones", False), ParamSpec(f"{name}_b", (dim,), "zeros", False)]


def _mlp_specs(prefix: str, arch: ProbeArch, fc2_rescale: float) -> list[ParamSpec]:
    return (_norm_specs(f"{prefix}norm2", arch.dim)
            + _linear_specs(f"{prefix}fc1", arch.dim, arch.hidden, "trunc")
            + _linear_specs(f"{prefix}fc2", arch.hidden, arch.dim, "trunc", rescale=fc2_rescale))


def probe_specs(arch: ProbeArch) -> list[ParamSpec]:
    """Every parameter of one probe of ``arch``, in a fixed order (initialisation draws in it)."""
    d, q = arch.dim, arch.queries
    head = _linear_specs("head", arch.features, arch.num_classes,
                         "trunc" if arch.variant == "capi" else "uniform")
    if arch.variant == "ep":
        return ([ParamSpec("query", (q, d), "normal", True)]
                + _linear_specs("v", d, d, "uniform", bias=False) + head)
    if arch.variant == "capi":
        return ([ParamSpec("query", (q, d), "trunc", True)]
                + _linear_specs("k", d, d, "trunc") + _linear_specs("v", d, d, "trunc") + head)
    specs = [ParamSpec("query", (q, d), "trunc", True)]
    blocks = arch.self_blocks if arch.variant == "vjepa2" else 0
    for i in range(blocks):
        scale = math.sqrt(2.0 * (i + 1))
        specs += (_norm_specs(f"block{i}_norm1", d) + _linear_specs(f"block{i}_qkv", d, 3 * d, "trunc")
                  + _linear_specs(f"block{i}_proj", d, d, "trunc", rescale=scale)
                  + _mlp_specs(f"block{i}_", arch, scale))
    specs += (_norm_specs("cross_norm1", d) + _linear_specs("cross_q", d, d, "trunc")
              + _linear_specs("cross_k", d, d, "trunc") + _linear_specs("cross_v", d, d, "trunc"))
    if arch.variant == "vjepa":
        specs += _linear_specs("cross_proj", d, d, "trunc", rescale=math.sqrt(2.0))
    return specs + _mlp_specs("cross_", arch, math.sqrt(2.0 * max(blocks, 1))) + head


def parameter_count(arch: ProbeArch) -> int:
    """Trainable parameters of one probe of ``arch`` (BatchNorm statistics are buffers)."""
    return sum(math.prod(spec.shape) for spec in probe_specs(arch))


def init_probe(arch: ProbeArch, seed: int) -> dict[str, torch.Tensor]:
    """One probe's initial parameters (float32, CPU), drawn in ``probe_specs`` order from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    values = {}
    for spec in probe_specs(arch):
        value = torch.empty(spec.shape)
        if spec.init == "trunc":
            nn.init.trunc_normal_(value, std=INIT_STD, generator=generator)
        elif spec.init == "normal":
            value.normal_(0.0, INIT_STD, generator=generator)
        elif spec.init == "uniform":
            bound = spec.fan_in ** -0.5
            value.uniform_(-bound, bound, generator=generator)
        else:
            value.fill_(1.0 if spec.init == "ones" else 0.0)
        values[spec.name] = value / spec.rescale
    return values


def attend(tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Attention-weighted token means: out[h, b, g] = sum_t softmax_t(tokens_t . queries[h, g]) tokens_t.

    ``tokens``: [B, T, D] shared by every probe, or [H, B, T, D]; ``queries``: [H, G, D] (scaled
    already). Returns [H, B, G, D].
    """
    probes, groups, dim = queries.shape
    if tokens.dim() == 3:
        batch, length, _ = tokens.shape
        scores = (tokens.reshape(batch * length, dim) @ queries.reshape(probes * groups, dim).T)
        weights = scores.view(batch, length, probes * groups).softmax(dim=1)
        pooled = torch.bmm(weights.transpose(1, 2), tokens)  # [B, H*G, D]
        return pooled.view(batch, probes, groups, dim).transpose(0, 1)
    scores = torch.matmul(queries.unsqueeze(1), tokens.transpose(-1, -2))  # [H, B, G, T]
    return torch.matmul(scores.softmax(dim=-1), tokens)


def _per_probe(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """[H, K] viewed as [H, 1, ..., 1, K] with ``ndim`` dimensions, to broadcast over [H, ..., K]."""
    return values.view(values.shape[0], *([1] * (ndim - 2)), values.shape[-1])


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per-probe x @ weight + bias: x [H or 1, ..., in], weight [H, in, out], bias [H, out]."""
    inner = x.shape[1:-1]
    out = torch.matmul(x.reshape(x.shape[0], -1, x.shape[-1]), weight)
    out = out.view(weight.shape[0], *inner, weight.shape[-1])
    return out if bias is None else out + _per_probe(bias, out.dim())


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dimension with a per-probe affine (weight, bias [H, D])."""
    normed = F.layer_norm(x, x.shape[-1:], eps=LN_EPS)
    return normed * _per_probe(weight, x.dim()) + _per_probe(bias, x.dim())


class ProbeGrid(nn.Module):
    """H probes of one architecture, stacked: parameters [H, *spec.shape]; tokens -> logits [H, B, C].

    All probes start from the same values (``init``, or :func:`init_probe` of ``seed``), so they
    differ only in how they are trained. ``ep`` grids keep BatchNorm statistics per probe in the
    buffers ``bn_mean`` / ``bn_var`` [H, D] (batch statistics in train mode, running ones in eval).
    """

    def __init__(self, arch: ProbeArch, count: int, seed: int = 0,
                 init: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.arch = arch
        self.count = count
        values = init_probe(arch, seed) if init is None else init
        self.decay: dict[str, bool] = {}
        for spec in probe_specs(arch):
            stacked = values[spec.name].expand(count, *spec.shape).clone()
            self.register_parameter(spec.name, nn.Parameter(stacked))
            self.decay[spec.name] = spec.decay
        if arch.variant == "ep":
            self.register_buffer("bn_mean", torch.zeros(count, arch.dim))
            self.register_buffer("bn_var", torch.ones(count, arch.dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [H, B, C] of every probe for tokens [B, T, D]."""
        variant = self.arch.variant
        if variant == "ep":
            features = self._batch_norm(self._efficient_pool(tokens))
        elif variant == "capi":
            features = self._attend_heads(tokens, self.query, self.k_w, self.v_w, self.v_b)
            features = features.flatten(2)
        else:
            if variant == "vjepa2":
                tokens = tokens.unsqueeze(0)
                for i in range(self.arch.self_blocks):
                    tokens = self._self_block(tokens, i)
            features = self._cross_block(tokens)
        return _linear(features, self.head_w, self.head_b)

    def probe(self, index: int) -> AttentiveProbe:
        """A copy of probe ``index`` as a stand-alone :class:`AttentiveProbe` (same mode)."""
        single = AttentiveProbe(self.arch, init={name: p.detach()[index].cpu()
                                                 for name, p in self.named_parameters()})
        for name, buffer in self.named_buffers():
            getattr(single, name).copy_(buffer[index:index + 1])
        return single.to(next(self.parameters()).device).train(self.training)

    def _attend_heads(self, tokens: torch.Tensor, queries: torch.Tensor, key_w: torch.Tensor,
                      value_w: torch.Tensor, value_b: torch.Tensor,
                      norm: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Multi-head attention of per-probe queries [H, Q, D] over ``tokens`` ([B, T, D] or
        [H, B, T, D]) with keys LN(x) W_k + b_k and values LN(x) W_v + b_v, computed factorised
        (module docstring); ``norm`` is the per-probe LayerNorm (gamma, beta), or None for none.
        Returns the heads' outputs concatenated: [H, B, Q, D]."""
        probes, count, dim = queries.shape
        heads = self.arch.heads
        width = dim // heads
        per_head = queries.view(probes, count, heads, width)
        key_queries = torch.einsum("hdnk,hqnk->hqnd", key_w.view(probes, dim, heads, width), per_head)
        key_queries = key_queries * width ** -0.5
        if norm is not None:
            key_queries = key_queries * norm[0][:, None, None, :]
            tokens = F.layer_norm(tokens, (dim,), eps=LN_EPS)
        pooled = attend(tokens, key_queries.reshape(probes, count * heads, dim))
        pooled = pooled.reshape(probes, -1, count, heads, dim)
        if norm is not None:
            pooled = pooled * _per_probe(norm[0], 5) + _per_probe(norm[1], 5)
        out = torch.einsum("hbqnd,hdnk->hbqnk", pooled, value_w.view(probes, dim, heads, width))
        return out.reshape(probes, -1, count, dim) + value_b[:, None, None, :]

    def _mlp(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        """x + fc2(GELU(fc1(LayerNorm(x)))) with the parameters named ``{prefix}norm2_w`` etc."""
        norm_w, norm_b, fc1_w, fc1_b, fc2_w, fc2_b = (getattr(self, prefix + name) for name in (
            "norm2_w", "norm2_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b"))
        hidden = F.gelu(_linear(_layer_norm(x, norm_w, norm_b), fc1_w, fc1_b))
        return x + _linear(hidden, fc2_w, fc2_b)

    def _cross_block(self, tokens: torch.Tensor) -> torch.Tensor:
        """V-JEPA's cross-attention block on [B, T, D] or [H, B, T, D]: features [H, B, Q*D]."""
        query = _linear(self.query, self.cross_q_w, self.cross_q_b)  # [H, Q, D]
        out = self._attend_heads(tokens, query, self.cross_k_w, self.cross_v_w, self.cross_v_b,
                                 norm=(self.cross_norm1_w, self.cross_norm1_b))
        if self.arch.variant == "vjepa":
            out = _linear(out, self.cross_proj_w, self.cross_proj_b)
        return self._mlp(self.query[:, None] + out, "cross_").flatten(2)

    def _self_block(self, tokens: torch.Tensor, index: int) -> torch.Tensor:
        """Pre-norm ViT block ``index`` over tokens [1 or H, B, T, D] -> [H, B, T, D]."""
        prefix = f"block{index}_"
        norm_w, norm_b, qkv_w, qkv_b, proj_w, proj_b = (getattr(self, prefix + name) for name in (
            "norm1_w", "norm1_b", "qkv_w", "qkv_b", "proj_w", "proj_b"))
        _, batch, length, dim = tokens.shape
        heads = self.arch.heads
        qkv = _linear(_layer_norm(tokens, norm_w, norm_b), qkv_w, qkv_b)
        qkv = qkv.view(self.count * batch, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [H*B, heads, T, D/heads]
        mixed = mixed.transpose(1, 2).reshape(self.count, batch, length, dim)
        return self._mlp(tokens + _linear(mixed, proj_w, proj_b), prefix)

    def _efficient_pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Efficient probing's pooling of tokens [B, T, D]: features [H, B, D]."""
        probes, count, dim = self.query.shape
        pooled = attend(tokens, self.query * dim ** -0.5)  # [H, B, Q, D]
        slices = self.v_w.view(probes, dim, count, dim // count)
        return torch.einsum("hbqd,hdqk->hbqk", pooled, slices).flatten(2)

    def _batch_norm(self, features: torch.Tensor) -> torch.Tensor:
        """BatchNorm1d(affine=False, eps=1e-6, momentum=0.1) per probe on features [H, B, D]."""
        if self.training:
            batch = features.shape[1]
            if batch < 2:
                raise JepaEvalError("an ep probe cannot train on a batch of one sample",
                                    expected="training batches of at least 2 (BatchNorm statistics)",
                                    found="a batch of 1")
            mean, var = features.mean(dim=1), features.var(dim=1, unbiased=False)
            with torch.no_grad():
                self.bn_mean.lerp_(mean.float(), BN_MOMENTUM)
                self.bn_var.lerp_(var.float() * batch / (batch - 1), BN_MOMENTUM)
        else:
            mean, var = self.bn_mean, self.bn_var
        return (features - mean[:, None]) * torch.rsqrt(var[:, None] + BN_EPS)


class AttentiveProbe(ProbeGrid):
    """One attentive probe: tokens [B, T, D] -> logits [B, C] (a :class:`ProbeGrid` of one)."""

    def __init__(self, arch: ProbeArch, seed: int = 0, init: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(arch, 1, seed, init)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return super().forward(tokens)[0]
