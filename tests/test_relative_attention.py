"""Music Transformer relative attention (issue 3) against a naive Shaw-style oracle kept here.

The oracle gathers one embedding per (query, key) pair — the (H, T, S, D) tensor the skew avoids —
and computes softmax((q kᵀ + q·e_ij) / sqrt(D)) v with e_ij = er[p_i - j] for 0 <= p_i - j < L and
a zero embedding beyond L (the rule zoo documents), queries at positions p_i = S - T + i.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import zoo.core.kernels
from zoo.core.attention import MultiHeadAttention
from zoo.core.cache import KVCache
from zoo.core.kernels import KERNELS, TensorBias, get_kernel
from zoo.core.positions import RelativeBias, RelativePositionBias, relative_logits, relative_self_attention

F64 = torch.float64


def oracle_rel(q: torch.Tensor, er: torch.Tensor, s: int) -> torch.Tensor:
    """(B, H, T, S) relative logits q_i · e_ij by explicit gather; -inf for future keys."""
    t, n = q.shape[2], er.shape[1]
    dist = torch.arange(s - t, s).unsqueeze(1) - torch.arange(s).unsqueeze(0)  # (T, S): p_i - j
    inside = (dist >= 0) & (dist < n)
    emb = er[:, dist.clamp(0, n - 1)] * inside.unsqueeze(-1).to(er.dtype)  # (H, T, S, D)
    rel = torch.einsum("bhtd,htsd->bhts", q, emb)
    return rel.masked_fill(dist < 0, float("-inf"))


def oracle_attention(q, k, v, er):
    """softmax((q kᵀ + S_rel) / sqrt(D)) v, the paper's RelativeAttention, with the causal mask."""
    logits = (q @ k.transpose(-1, -2) + oracle_rel(q, er, k.shape[2])) / math.sqrt(q.shape[-1])
    return logits.softmax(-1) @ v


def randn(*shape, dtype=F64, requires_grad=False):
    return torch.randn(*shape, dtype=dtype).requires_grad_(requires_grad)


# (T, S, H, D, L): T = 1, 7, 64; S > T as with a KV cache; L smaller and larger than the distances.
CASES = [
    (1, 1, 2, 8, 4),
    (1, 9, 2, 8, 4),
    (1, 9, 1, 4, 32),
    (7, 7, 2, 8, 3),
    (7, 7, 3, 16, 20),
    (7, 12, 2, 8, 5),
    (7, 12, 4, 4, 1),
    (64, 64, 2, 16, 17),
    (64, 64, 4, 8, 100),
    (64, 80, 2, 8, 64),
]


@pytest.mark.parametrize(("t", "s", "h", "d", "n"), CASES)
def test_relative_logits_equal_explicit_gather(t, s, h, d, n):
    torch.manual_seed(t * 1000 + s * 10 + n)
    q, er = randn(2, h, t, d), randn(h, n, d)
    got = relative_logits(q, er, s)
    assert got.shape == (2, h, t, s)
    torch.testing.assert_close(got, oracle_rel(q, er, s), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("t", "s", "h", "d", "n"), CASES)
@pytest.mark.parametrize("chunk", [None, 5])
@pytest.mark.parametrize("path", ["matmul", "kernel"])
def test_forward_and_gradients_equal_naive_shaw(t, s, h, d, n, chunk, path):
    """Both paths, T = 1 / 7 / 64 with chunks of 5 rows (T not a multiple), cached (S > T), L < and > S."""
    torch.manual_seed(t * 1000 + s * 10 + n)
    q, k, v = (randn(2, h, t if i == 0 else s, d, requires_grad=True) for i in range(3))
    er = randn(h, n, d, requires_grad=True)
    grad_out = randn(2, h, t, d)
    got = relative_self_attention(q, k, v, er, chunk=chunk, path=path)
    want = oracle_attention(q, k, v, er)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(got, (q, k, v, er), grad_out)
    grads_want = torch.autograd.grad(want, (q, k, v, er), grad_out)
    for name, g, w in zip(["q", "k", "v", "er"], grads, grads_want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"d{name}: {m}")


def test_matmul_path_blocks_of_one_head_equal_oracle(monkeypatch):
    """The matmul path's head groups (here one head per block: MATMUL_BLOCK_BYTES forced down) and row
    chunks (3 rows, T = 10 not a multiple) change nothing, forward or backward."""
    monkeypatch.setattr(zoo.core.kernels, "MATMUL_BLOCK_BYTES", 1)
    torch.manual_seed(3)
    q, k, v = (randn(2, 3, 10 if i == 0 else 13, 8, requires_grad=True) for i in range(3))
    er = randn(3, 6, 8, requires_grad=True)
    got = relative_self_attention(q, k, v, er, chunk=3, path="matmul")
    want = oracle_attention(q, k, v, er)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    grad_out = randn(*got.shape)
    for g, w in zip(torch.autograd.grad(got, (q, k, v, er), grad_out),
                    torch.autograd.grad(want, (q, k, v, er), grad_out)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


def test_float32_paths_agree_forward_and_backward():
    """fp32 on CPU: the default (matmul) path against the SDPA-bias path, values and gradients."""
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 4, 75, 16, requires_grad=True) for _ in range(3))
    er = (torch.randn(4, 50, 16) * 0.25).requires_grad_()
    outs, grads = [], []
    for path in ("auto", "kernel"):
        out = relative_self_attention(q, k, v, er, chunk=32, path=path)
        outs.append(out)
        grads.append(torch.autograd.grad(out, (q, k, v, er), torch.ones_like(out)))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_matmul_path_requirements_are_errors():
    q = torch.randn(1, 2, 5, 4)
    er = torch.randn(2, 4, 4)
    with pytest.raises(ValueError, match="path='matmul' needs a CPU float32/float64 input, dropout_p=0"):
        relative_self_attention(q, q, q, er, dropout_p=0.1, path="matmul")
    with pytest.raises(ValueError, match="dtype torch.bfloat16"):
        relative_self_attention(*(x.bfloat16() for x in (q, q, q, er)), path="matmul")
    with pytest.raises(ValueError, match="path must be 'auto', 'matmul' or 'kernel', got 'fast'"):
        relative_self_attention(q, q, q, er, path="fast")
    out = relative_self_attention(*(x.bfloat16() for x in (q, q, q, er)))  # auto: the kernel path takes it
    assert out.dtype == torch.bfloat16 and out.shape == q.shape


def test_float32_forward_close_to_float64_oracle():
    torch.manual_seed(0)
    q, k, v = (randn(1, 4, 48, 16) for _ in range(3))
    er = randn(4, 30, 16)
    got = relative_self_attention(*(x.float() for x in (q, k, v, er)))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), oracle_attention(q, k, v, er), rtol=1e-4, atol=1e-5)


def mha(n: int = 12, *, dtype=F64, seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    return MultiHeadAttention(32, 4, kernel="chunked", position_bias=RelativePositionBias(n)).to(dtype).eval()


def test_module_is_paper_eq4_with_its_own_weights():
    """The module adds S_rel before dividing by sqrt(D), with its own projections and er table."""
    m = mha(n=12)
    x = randn(2, 20, 32)
    q, k, v = (z.view(2, 20, 4, 8).transpose(1, 2) for z in m.c_attn(x).split(32, dim=2))
    y = oracle_attention(q, k, v, m.er).transpose(1, 2).reshape(2, 20, 32)
    torch.testing.assert_close(m(x), m.c_proj(y), rtol=1e-10, atol=1e-10)
    assert m.er.shape == (4, 12, 8)  # (H, L, D): one embedding per distance per head


def test_module_gradient_reaches_every_parameter():
    m = mha(n=6)
    m(randn(1, 10, 32)).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_distances_past_the_window_get_zero_embedding():
    """With L = 1 only distance 0 has an embedding: a key further left is weighted by content only."""
    torch.manual_seed(0)
    q, er = randn(1, 1, 4, 8), randn(1, 1, 8)
    rel = relative_logits(q, er, 4)[0, 0]  # (T, S)
    torch.testing.assert_close(rel.diagonal(), (q[0, 0] * er[0, 0]).sum(-1))
    below = torch.ones(4, 4, dtype=torch.bool).tril(-1)
    assert torch.equal(rel[below], torch.zeros(6, dtype=F64))
    assert torch.isneginf(rel[~below.logical_or(torch.eye(4, dtype=torch.bool))]).all()


@pytest.mark.parametrize("t", [1, 16])
def test_causality_future_tokens_do_not_change_past_outputs(t):
    m = mha(n=8)
    x = randn(2, 24, 32)
    x2 = x.clone()
    x2[:, t:] = randn(2, 24 - t, 32)
    y, y2 = m(x), m(x2)
    torch.testing.assert_close(y[:, :t], y2[:, :t], rtol=0, atol=0)
    assert not torch.allclose(y[:, t:], y2[:, t:])  # the perturbation is visible where it may be


@pytest.mark.parametrize("n", [16, 64])
@pytest.mark.parametrize("step", [1, 6, 40])
def test_cached_decoding_equals_full_recomputation(n, step):
    """40 tokens in one pass vs token by token (step 1) and in chunks of 6 with a KVCache."""
    m = mha(n=n, seed=n)
    x = randn(3, 40, 32)
    full = m(x)
    cache = KVCache(n_layer=1, batch=3, n_head=4, max_len=40, head_dim=8, device="cpu", dtype=F64)
    parts = []
    for start in range(0, 40, step):
        parts.append(m(x[:, start:start + step], cache=cache))
        cache.advance(parts[-1].shape[1])
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-10, atol=1e-10)


def test_cached_decoding_with_default_chunking(monkeypatch):
    """The module's default chunk rule (here forced down to 4-row chunks) keeps cache equivalence."""
    monkeypatch.setattr(zoo.core.kernels, "CHUNK_BYTES", {"cpu": 1})
    monkeypatch.setattr(zoo.core.kernels, "MIN_CHUNK", 4)
    m = mha(n=9)
    x = randn(2, 30, 32)
    full = m(x)
    cache = KVCache(1, 2, 4, 30, 8, device="cpu", dtype=F64)
    parts = []
    for start in range(0, 30, 11):
        parts.append(m(x[:, start:start + 11], cache=cache))
        cache.advance(parts[-1].shape[1])
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-10, atol=1e-10)


def test_inference_keeps_the_distance_table_until_er_changes():
    """Without gradients the scaled distance table is kept on the module between calls (decoding); it must follow
    an in-place change of er (an optimizer step) and grow for longer caches, never serve stale distances. The
    references run with gradients on, which never use a kept table."""
    m = mha(n=6, seed=3)
    x = randn(2, 30, 32)

    def decoded(length: int) -> torch.Tensor:
        cache = KVCache(1, 2, 4, length, 8, device="cpu", dtype=F64)
        parts = []
        with torch.no_grad():
            for start in range(length):
                parts.append(m(x[:, start:start + 1], cache=cache))
                cache.advance(1)
        return torch.cat(parts, dim=1)

    torch.testing.assert_close(decoded(10), m(x[:, :10]).detach(), rtol=1e-10, atol=1e-10)
    assert 10 <= m.__dict__["_kept_relative_table"][1].shape[1] < 20  # kept; grown by doubling past 9 keys + 1
    torch.testing.assert_close(decoded(30), m(x).detach(), rtol=1e-10, atol=1e-10)  # longer: rebuilt longer
    with torch.no_grad():
        m.er.mul_(-2.0)  # an in-place update, as an optimizer step makes
    torch.testing.assert_close(decoded(30), m(x).detach(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("step", [1, 3])
def test_static_cache_decoding_equals_full_recomputation(step):
    """The fixed-shape (compilable) path: relative logits gathered by distance over the whole buffers."""
    m = mha(n=7, seed=5)
    x = randn(2, 25, 32)
    full = m(x)
    cache = KVCache(1, 2, 4, 32, 8, device="cpu", dtype=F64)  # longer than needed: the tail stays masked
    parts = [m(x[:, :4], cache=cache)]  # prefill on the ordinary cache, then switch
    cache.advance(4)
    cache.make_static()
    for start in range(4, 25, step):
        parts.append(m(x[:, start:start + step], cache=cache))
        cache.advance(parts[-1].shape[1])
    assert cache.pos == 25 and int(cache.position) == 25
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-10, atol=1e-10)


def test_cached_decoding_float32_sdpa_path():
    m = mha(n=10, dtype=torch.float32)
    x = torch.randn(1, 40, 32)
    full = m(x)
    cache = KVCache(1, 1, 4, 40, 8, device="cpu", dtype=torch.float32)
    parts = []
    for start in range(40):
        parts.append(m(x[:, start:start + 1], cache=cache))
        cache.advance(1)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(o, torch.Tensor):
                self.largest = max(self.largest, o.numel())
        return out


def test_memory_never_materialises_pairwise_embeddings():
    """Forward+backward creates nothing of size (B, H, T, S, D) or (H, T, S, D): only O(T·S) logits."""
    b, h, t, d = 1, 2, 96, 32
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    er = torch.randn(h, t, d, requires_grad=True)
    with LargestTensor() as probe:
        relative_self_attention(q, k, v, er, chunk=t).sum().backward()
    assert probe.largest <= b * h * t * (t + 1)
    with LargestTensor() as probe:  # the oracle, for contrast: the probe does see the (H, T, S, D) tensor
        oracle_attention(q, k, v, er)
    assert probe.largest >= h * t * t * d


def test_default_chunks_bound_the_live_bias():
    b, h, t, d = 1, 2, 200, 8
    q, k, v = (torch.randn(b, h, t, d) for _ in range(3))
    er = torch.randn(h, t, d)
    with LargestTensor() as probe:
        out = relative_self_attention(q, k, v, er, chunk=64)
    assert probe.largest <= b * h * 64 * (t + 1)
    torch.testing.assert_close(out, relative_self_attention(q, k, v, er, chunk=t), rtol=1e-5, atol=1e-6)


def test_relative_is_a_position_bias_not_a_kernel():
    assert set(KERNELS) == {"math", "sdpa", "chunked"}
    with pytest.raises(ValueError, match=r"unknown attention kernel 'relative'.*RelativePositionBias"):
        get_kernel("relative")


def test_sdpa_takes_the_lazy_bias_whole_and_trusts_its_folded_mask():
    """`masks_future`: the skew's -inf already masks the future, so sdpa does not mask again; equal to math."""
    torch.manual_seed(0)
    q, k, v = (randn(1, 2, 5, 8) for _ in range(3))
    bias = RelativeBias(q, randn(2, 5, 8), 5)
    assert bias.masks_future and torch.isneginf(bias.dense()[0, 0].triu(1)[0, 1:]).all()
    torch.testing.assert_close(KERNELS["sdpa"](q, k, v, bias=bias, causal=True),
                               KERNELS["math"](q, k, v, bias=bias, causal=True), rtol=1e-6, atol=1e-6)


def test_module_with_math_kernel_bias_path_agrees():
    """The math kernel (float32 inside, masks again) on the same bias agrees with the chunked kernel."""
    torch.manual_seed(1)
    q, k, v = (randn(1, 2, 11, 8) for _ in range(3))
    er = randn(2, 4, 8)
    torch.testing.assert_close(relative_self_attention(q, k, v, er, kernel=KERNELS["math"]),
                               relative_self_attention(q, k, v, er), rtol=1e-5, atol=1e-6)


def test_chunked_kernel_with_a_dense_bias_uses_the_kernel_path():
    """A plain tensor bias (not blockwise) is cut into rows per chunk and masked there; matmul refuses it."""
    torch.manual_seed(2)
    q, k, v = (randn(2, 3, 9, 8, requires_grad=True) for _ in range(3))
    dense = randn(1, 3, 9, 9, requires_grad=True)
    got = zoo.core.kernels.chunked_attention(q, k, v, bias=dense, causal=True, chunk=4)
    want = KERNELS["math"](q, k, v, bias=dense, causal=True)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    for g, w in zip(torch.autograd.grad(got.sum(), (q, dense)), torch.autograd.grad(want.sum(), (q, dense))):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    assert TensorBias(dense, 9, 9).rows(4, 6).shape == (1, 3, 2, 6)
    with pytest.raises(ValueError, match="path='matmul' needs .* a BlockwiseBias"):
        zoo.core.kernels.chunked_attention(q, k, v, bias=dense, causal=True, path="matmul")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"position_bias": 0}, "needs max_distance .* a positive int, got 0"),
        ({"position_bias": None}, "a positive int, got None"),
        ({"position_bias": 8, "cross": True}, "cross=True"),
        ({"position_bias": 8, "causal": False}, "causal=False"),
    ],
)
def test_bad_configuration_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(16, 2, **(kwargs | {"position_bias": RelativePositionBias(kwargs["position_bias"])}))


def test_relative_logits_shape_errors():
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="s_len=3 keys for 5 queries"):
        relative_logits(q, torch.randn(2, 4, 4), 3)
    with pytest.raises(ValueError, match=r"er must be \(H, L, D\) = \(2, L, 4\), got \(3, 4, 4\)"):
        relative_logits(q, torch.randn(3, 4, 4), 5)
    with pytest.raises(ValueError, match="chunk must be a positive"):
        relative_self_attention(q, q, q, torch.randn(2, 4, 4), chunk=0)
    with pytest.raises(ValueError, match="chunk and path are options of the default chunked kernel"):
        relative_self_attention(q, q, q, torch.randn(2, 4, 4), kernel=KERNELS["math"], chunk=4)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_forward_and_gradients_match_oracle(dtype):
    """On CUDA SDPA takes the float mask (and its gradient) through its memory-efficient kernel."""
    torch.manual_seed(0)
    q, k, v = (randn(2, 4, 96, 32, requires_grad=True) for _ in range(3))
    er = randn(4, 50, 32, requires_grad=True)
    grad_out = randn(2, 4, 96, 32)
    want = oracle_attention(q, k, v, er)
    grads_want = torch.autograd.grad(want, (q, k, v, er), grad_out)
    dev = [x.detach().to("cuda", dtype).requires_grad_() for x in (q, k, v, er)]
    got = relative_self_attention(*dev)
    grads = torch.autograd.grad(got, dev, grad_out.to("cuda", dtype))
    tol = {"rtol": 2e-3, "atol": 2e-3} if dtype == torch.float32 else {"rtol": 5e-2, "atol": 5e-2}
    torch.testing.assert_close(got.double().cpu(), want, **tol)
    for g, w in zip(grads, grads_want):
        torch.testing.assert_close(g.double().cpu(), w, **tol)


@pytest.mark.gpu
@cuda
def test_cuda_cached_decoding_equals_full_recomputation():
    m = mha(n=16, dtype=torch.float32).cuda()
    x = torch.randn(2, 40, 32, device="cuda")
    full = m(x)
    cache = KVCache(1, 2, 4, 40, 8, device="cuda", dtype=torch.float32)
    parts = []
    for start in range(0, 40, 3):
        parts.append(m(x[:, start:start + 3], cache=cache))
        cache.advance(parts[-1].shape[1])
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-4)
