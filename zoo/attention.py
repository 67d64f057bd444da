"""The shared attention core: one `MultiHeadAttention` module and interchangeable kernels.

Shape legend used throughout this file:
    B batch, T query length, S key length (cached prefix + T), H heads, D head dim, C model width.

Every kernel has the same signature::

    kernel(q, k, v, *, bias, causal, dropout_p, scale) -> out
    q (B, H, T, D); k, v (B, H, S, D); bias broadcastable to (B, H, T, S) or None; out (B, H, T, D)

`causal=True` means query i (the i-th of the T new positions, which sits at absolute position
S - T + i) may attend to keys 0 .. S - T + i. This "bottom-right aligned" convention is what makes
the same call correct for a full sequence (S == T) and for cached decoding (S > T).

`math` is the reference kernel and the oracle in tests; `sdpa` is the fast path through
`torch.nn.functional.scaled_dot_product_attention`. Position schemes that alter the logits (the
Music Transformer's relative attention) supply an additive `bias` computed inside this module from
a config field, so callers never change when a new scheme is added.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KernelName = Literal["math", "sdpa", "relative"]


class Kernel(Protocol):
    def __call__(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        bias: Tensor | None,
        causal: bool,
        dropout_p: float,
        scale: float | None,
    ) -> Tensor: ...


def causal_mask(t: int, s: int, device: torch.device | None = None) -> Tensor:
    """Boolean (T, S) mask, True where query i may see key j (bottom-right aligned)."""
    i = torch.arange(t, device=device).unsqueeze(1) + (s - t)
    j = torch.arange(s, device=device).unsqueeze(0)
    return j <= i


def math_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    bias: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """Reference kernel: softmax(q kᵀ · scale + bias, masked) v, computed in float32 for stability."""
    t, s = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    att = (q.float() @ k.float().transpose(-2, -1)) * scale  # (B, H, T, S)
    if bias is not None:
        att = att + bias.float()
    if causal:
        att = att.masked_fill(~causal_mask(t, s, q.device), float("-inf"))
    att = att.softmax(dim=-1)
    if dropout_p > 0.0:
        att = F.dropout(att, p=dropout_p)
    return (att @ v.float()).to(q.dtype)  # (B, H, T, D)


def sdpa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    bias: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> Tensor:
    """Fast kernel through PyTorch's fused scaled-dot-product attention."""
    t, s = q.shape[-2], k.shape[-2]
    if bias is None:
        if not causal or t == s:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=scale)
        if t == 1:  # one new token sees the whole cache: no mask at all
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)
        mask = causal_mask(t, s, q.device)  # SDPA's is_causal is top-left aligned; ours is bottom-right
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
    bias = bias.to(q.dtype)
    if causal:
        bias = bias.masked_fill(~causal_mask(t, s, q.device), float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)


KERNELS: dict[str, Kernel] = {"math": math_attention, "sdpa": sdpa_attention}


def get_kernel(name: str) -> Kernel:
    if name not in KERNELS:
        raise ValueError(f"unknown attention kernel {name!r}; accepted: {sorted(KERNELS)}")
    return KERNELS[name]


class KVCache:
    """Per-layer key/value cache for incremental decoding.

    Preallocates (B, H, max_len, D) buffers once and fills them in place, so decoding a token costs
    no reallocation. `pos` is the number of positions already stored (shared by all layers).
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (batch, n_head, max_len, head_dim)
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.max_len = max_len
        self.pos = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v (B, H, T, D) for `layer`; return the whole stored prefix (B, H, pos + T, D)."""
        t = k.shape[-2]
        end = self.pos + t
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions requested, cache holds {self.max_len}")
        self.k[layer][:, :, self.pos:end] = k
        self.v[layer][:, :, self.pos:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, t: int) -> None:
        """Called once per forward pass after every layer has written its `t` new positions."""
        self.pos += t

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (e.g. after duplicating rows for guidance)."""
        self.k = [k.index_select(0, index) for k in self.k]
        self.v = [v.index_select(0, index) for v in self.v]


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with fused projections, pluggable kernel and an optional KV cache.

    Parameter names follow GPT-2 (`c_attn` fused qkv, `c_proj` output) so that GPT-2 weights
    import key for key. For cross-attention (`cross=True`) the query comes from `x` and keys and
    values from `context`, through separate `q_proj` / `kv_proj` projections.

    `rotary`, if given, is called as `rotary(x, offset)` on q and k (B, H, T, D), `offset` being the
    absolute position of the first new token.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        kernel: str = "sdpa",
        dropout: float = 0.0,
        bias: bool = True,
        causal: bool = True,
        cross: bool = False,
        layer_idx: int = 0,
    ) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.causal, self.cross, self.layer_idx = causal, cross, layer_idx
        self.dropout = dropout
        self.kernel_name = kernel
        # `relative` is an `sdpa` call with a bias supplied by a position module (see layers).
        self.kernel = get_kernel("sdpa" if kernel == "relative" else kernel)
        if cross:
            self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
            self.kv_proj = nn.Linear(n_embd, 2 * n_embd, bias=bias)
        else:
            self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(
        self,
        x: Tensor,
        *,
        context: Tensor | None = None,
        cache: KVCache | None = None,
        rotary: Callable[[Tensor, int], Tensor] | None = None,
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C). With a cache, x holds only the T new positions."""
        b, t, c = x.shape
        offset = cache.pos if cache is not None else 0
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a `context` tensor (B, S, C)")
            q = self._heads(self.q_proj(x))
            k, v = (self._heads(z) for z in self.kv_proj(context).split(self.n_embd, dim=2))
            causal = False
        else:
            q, k, v = (self._heads(z) for z in self.c_attn(x).split(self.n_embd, dim=2))
            if rotary is not None:
                q, k = rotary(q, offset), rotary(k, offset)
            if cache is not None:
                k, v = cache.update(self.layer_idx, k, v)  # (B, H, S, D), S = offset + T
            causal = self.causal
        bias = None  # relative attention (kernel="relative") will supply its skewed logits here
        y = self.kernel(q, k, v, bias=bias, causal=causal,
                        dropout_p=self.dropout if self.training else 0.0, scale=None)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))
