"""The shared attention core: kernel parity, the causal convention, the KV cache, the module."""

from __future__ import annotations

import pytest
import torch

from zoo.core.attention import MultiHeadAttention
from zoo.core.cache import KVCache
from zoo.core.kernels import KERNELS, causal_mask, get_kernel, math_attention, sdpa_attention


def qkv(t: int, s: int, *, b: int = 2, h: int = 3, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, t, d, generator=g).requires_grad_()
    k = torch.randn(b, h, s, d, generator=g).requires_grad_()
    v = torch.randn(b, h, s, d, generator=g).requires_grad_()
    return q, k, v


@pytest.mark.parametrize(
    ("t", "s", "causal", "with_bias"),
    [
        (9, 9, False, False),
        (9, 9, True, False),
        (9, 9, False, True),
        (9, 9, True, True),
        (4, 11, True, False),  # T < S: bottom-right aligned causal, as with a KV cache
        (4, 11, True, True),
        (1, 11, True, False),  # one new token sees the whole cache
        (4, 11, False, True),
    ],
)
def test_math_and_sdpa_agree_forward_and_gradients(t, s, causal, with_bias):
    q, k, v = qkv(t, s)
    bias = torch.randn(1, 3, t, s).requires_grad_() if with_bias else None  # broadcast over batch
    grad_out = torch.randn(2, 3, t, 16)
    outs, grads = [], []
    for kernel in (math_attention, sdpa_attention):
        out = kernel(q, k, v, bias=bias, causal=causal, dropout_p=0.0, scale=None)
        inputs = (q, k, v) + ((bias,) if with_bias else ())
        outs.append(out)
        grads.append(torch.autograd.grad(out, inputs, grad_out))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for g_math, g_sdpa in zip(*grads):
        torch.testing.assert_close(g_math, g_sdpa, rtol=1e-4, atol=1e-5)


def test_math_kernel_is_softmax_attention():
    """The reference itself, spelled out: softmax(q kᵀ · scale + bias, bottom-right causal) v."""
    q, k, v = (x.detach() for x in qkv(3, 5, b=1, h=1, d=4))
    bias = torch.randn(3, 5)
    scale = 0.3
    logits = q[0, 0] @ k[0, 0].T * scale + bias
    logits[0, 3:] = logits[1, 4:] = float("-inf")  # query i sits at position 2 + i
    want = logits.softmax(-1) @ v[0, 0]
    got = math_attention(q, k, v, bias=bias, causal=True, scale=scale)
    torch.testing.assert_close(got[0, 0], want)


def test_causal_mask_is_bottom_right_aligned():
    assert torch.equal(causal_mask(3, 3), torch.ones(3, 3, dtype=torch.bool).tril())
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(1, 5).all()


def test_causal_sdpa_ignores_future_keys():
    q, k, v = (x.detach() for x in qkv(6, 6))
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 4:], v2[:, :, 4:] = torch.randn(2, 3, 2, 16), torch.randn(2, 3, 2, 16)
    out = sdpa_attention(q, k, v, causal=True)
    out2 = sdpa_attention(q, k2, v2, causal=True)
    torch.testing.assert_close(out[:, :, :4], out2[:, :, :4], rtol=0, atol=0)
    assert not torch.allclose(out[:, :, 4:], out2[:, :, 4:])


def test_get_kernel_unknown_name():
    assert get_kernel("math") is math_attention and get_kernel("sdpa") is sdpa_attention
    with pytest.raises(ValueError, match=r"unknown attention kernel 'flash'; accepted: \['math', "):
        get_kernel("flash")
    assert set(KERNELS) == {"math", "sdpa", "chunked"}


def test_kv_cache_overflow_error():
    cache = KVCache(n_layer=1, batch=1, n_head=2, max_len=4, head_dim=8, device="cpu", dtype=torch.float32)
    k = torch.zeros(1, 2, 3, 8)
    cache.update(0, k, k)
    cache.advance(3)
    with pytest.raises(ValueError, match="KV cache overflow: 5 positions requested, cache holds 4"):
        cache.update(0, torch.zeros(1, 2, 2, 8), torch.zeros(1, 2, 2, 8))


def test_kv_cache_update_returns_prefix_and_reorder_selects_rows():
    cache = KVCache(n_layer=2, batch=2, n_head=1, max_len=5, head_dim=2, device="cpu", dtype=torch.float32)
    a = torch.arange(8.0).view(2, 1, 2, 2)
    for layer in range(2):
        k, v = cache.update(layer, a, -a)
    cache.advance(2)
    k, v = cache.update(0, a[:, :, :1] + 100, a[:, :, :1])
    assert k.shape == (2, 1, 3, 2) and torch.equal(k[:, :, :2], a) and torch.equal(k[:, :, 2], a[:, :, 0] + 100)
    cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache.k[1][0, :, :2], a[1]) and torch.equal(cache.k[1][1, :, :2], a[1])


def test_kv_cache_static_mode_writes_at_the_tensor_position_and_masks_the_rest():
    cache = KVCache(n_layer=1, batch=1, n_head=1, max_len=5, head_dim=2, device="cpu", dtype=torch.float32)
    cache.k[0].fill_(float("nan")), cache.v[0].fill_(float("nan"))  # what torch.empty may hold
    a = torch.ones(1, 1, 2, 2)
    cache.update(0, a, a)
    cache.advance(2)
    cache.make_static()
    assert cache.static and int(cache.position) == 2
    assert torch.equal(cache.k[0][:, :, 2:], torch.zeros(1, 1, 3, 2))  # the unwritten tail zeroed (0 · v, not NaN)
    k, v = cache.update(0, a[:, :, :1] * 7, a[:, :, :1] * 8)
    assert k.shape == (1, 1, 5, 2)  # static: the whole buffer, every step the same shape
    assert k[0, 0, :, 0].tolist() == [1, 1, 7, 0, 0] and v[0, 0, 2, 0] == 8
    assert cache.attention_mask(1).tolist() == [[True, True, True, False, False]]
    assert cache.attention_mask(2).tolist() == [[True, True, True, False, False], [True, True, True, True, False]]
    cache.advance(1)
    assert cache.pos == 3 and int(cache.position) == 3


@pytest.mark.parametrize("kernel", ["math", "sdpa"])
def test_static_cache_decoding_with_rotary_equals_full(kernel):
    from zoo.core.positions import RotaryEmbedding

    torch.manual_seed(0)
    m = MultiHeadAttention(32, 4, kernel=kernel).eval()
    rot = RotaryEmbedding(8, 64)
    x = torch.randn(2, 20, 32)
    with torch.no_grad():
        full = m(x, rotary=rot)
        cache = KVCache(1, 2, 4, 32, 8, device="cpu", dtype=torch.float32)
        parts = [m(x[:, :5], cache=cache, rotary=rot)]
        cache.advance(5)
        cache.make_static()
        for t in range(5, 20):
            parts.append(m(x[:, t:t + 1], cache=cache, rotary=rot))
            cache.advance(1)
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-6)


def test_cross_attention_shapes_and_missing_context():
    torch.manual_seed(0)
    m = MultiHeadAttention(32, 4, cross=True)
    x, context = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    y = m(x, context=context)
    assert y.shape == (2, 5, 32)
    assert not hasattr(m, "c_attn") and m.q_proj.weight.shape == (32, 32) and m.kv_proj.weight.shape == (64, 32)
    # Not causal: the first query sees the last context position.
    context2 = context.clone()
    context2[:, -1] += 1.0
    assert not torch.allclose(m(x, context=context2)[:, 0], y[:, 0])
    with pytest.raises(ValueError, match="cross-attention needs a `context`"):
        m(x)


@pytest.mark.parametrize("kernel", ["sdpa", "math"])
def test_cached_decoding_equals_uncached_for_64_steps(kernel):
    torch.manual_seed(0)
    m = MultiHeadAttention(32, 4, kernel=kernel).eval()
    x = torch.randn(2, 64, 32)
    full = m(x)
    cache = KVCache(n_layer=1, batch=2, n_head=4, max_len=64, head_dim=8, device="cpu", dtype=torch.float32)
    steps = []
    for i in range(64):
        steps.append(m(x[:, i:i + 1], cache=cache))
        cache.advance(1)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_cached_prefill_then_steps_with_rotary():
    """A prompt chunk then single steps, with a rotary callable offset by the cache position."""
    torch.manual_seed(0)

    def rotary(x: torch.Tensor, offset: int) -> torch.Tensor:  # position-dependent, so offsets matter
        pos = torch.arange(offset, offset + x.shape[-2], dtype=x.dtype).view(-1, 1)
        return x * torch.cos(pos * 0.1) + x.roll(1, dims=-1) * torch.sin(pos * 0.1)

    m = MultiHeadAttention(16, 2).eval()
    x = torch.randn(1, 12, 16)
    full = m(x, rotary=rotary)
    cache = KVCache(1, 1, 2, 12, 8, device="cpu", dtype=torch.float32)
    parts = [m(x[:, :7], cache=cache, rotary=rotary)]
    cache.advance(7)
    for i in range(7, 12):
        parts.append(m(x[:, i:i + 1], cache=cache, rotary=rotary))
        cache.advance(1)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


def test_n_embd_not_divisible_by_n_head():
    with pytest.raises(ValueError, match="n_embd=30 must be divisible by n_head=4"):
        MultiHeadAttention(30, 4)


def test_unknown_kernel_in_module():
    with pytest.raises(ValueError, match="unknown attention kernel 'fast'"):
        MultiHeadAttention(16, 2, kernel="fast")
