"""`MultiHeadAttention`: projections, heads, the KV cache, a position scheme and a kernel; nothing else.

Shapes as in `zoo.core.kernels`: B batch, T query length, S key length (cached prefix + T), H heads,
D head dim, C model width.

The module owns the projections and hands the softmax core to one kernel with the one signature
(`zoo.core.kernels`), resolved once when the module is built. Position schemes enter in two ways
(`zoo.core.positions`): a rotation of q and k (`rotary`, passed per call by the model that owns the
table), and a `PositionBias` provider (e.g. `RelativePositionBias`) whose bias the kernel receives as
its `bias` argument, for full sequences, cached decoding and the static (compiled) decode path alike.
So no code here or in a kernel branches on a kernel or scheme name, and the math kernel is the oracle
for every combination.

Two more axes, both off by default (the defaults compute exactly what plain multi-head attention did):
- `n_kv_head` (grouped-query attention, Ainslie et al. 2023; 1 = multi-query, Shazeer 2019): k and v get
  Hkv heads, each shared by H / Hkv query heads; the kernels take k, v (B, Hkv, S, D) as they are and the
  KV cache stores Hkv heads. Only `c_attn` (or `kv_proj`) changes shape, and only when Hkv < H.
- `window` (sliding-window attention): query p sees keys p - window + 1 .. p only; the mask reaches the
  kernel as part of its bias (`zoo.core.kernels.window_extra`), so every kernel and position bias takes it.
- `qk_norm` (QK-norm; Dehghani et al. 2023, the modded-nanogpt speedrun, Qwen3/OLMo-2): each head's query and
  key is RMS-normalised over D (`q_norm`, `k_norm`: `RMSNorm(D)`, one gain of D shared by the heads) right
  after the projection, before the rotary rotation (as the speedrun; a rotation keeps the RMS, so the kernel
  sees unit-RMS q, k times the gains either way) and before the KV cache (which so stores normalised keys)
  and any position bias (which reads the normalised, rotated queries). The kernel scale stays 1/sqrt(D):
  the learnable gains, initialised to 1, are the temperature. With a fixed scale unit-RMS q, k cap every
  logit at ±sqrt(D) (±4 at D = 16), too flat to attend sharply; the speedrun instead fixed a larger scale
  tuned for its D = 128.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from zoo.core.cache import KVCache
from zoo.core.kernels import Kernel, extend_bias, get_kernel, window_extra
from zoo.core.norms import RMSNorm
from zoo.core.positions import PositionBias, resolve_kernel

__all__ = ["KVCache", "MultiHeadAttention"]  # KVCache lives in zoo.core.cache; older imports find it here


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with fused projections, one kernel, an optional position bias and KV cache.

    Parameter names follow GPT-2 (`c_attn` fused qkv, `c_proj` output) so that GPT-2 weights
    import key for key. For cross-attention (`cross=True`) the query comes from `x` and keys and
    values from `context`, through separate `q_proj` / `kv_proj` projections.

    `kernel` is a name in `zoo.core.kernels.KERNELS`, "auto" (the position bias's best kernel,
    `zoo.core.positions.resolve_kernel`) or a kernel callable. `position_bias` registers
    what it learns on this module (`RelativePositionBias`: the parameter `er` (H, L, D), checkpoint key
    `<block>.attn.er`) and builds the kernel's `bias` on every call from the (rotated) queries.
    `rotary`, if given to `forward`, is called as `rotary(x, offset)` on q and k (B, H, T, D), `offset`
    being the absolute position of the first new token.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        kernel: str | Kernel = "sdpa",
        position_bias: PositionBias | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        causal: bool = True,
        cross: bool = False,
        layer_idx: int = 0,
        n_kv_head: int | None = None,
        window: int | None = None,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if n_kv_head < 1 or n_head % n_kv_head:
            raise ValueError(f"n_kv_head={n_kv_head} must be a positive divisor of n_head={n_head} "
                             "(n_head: multi-head, 1: multi-query, between: grouped-query attention)")
        if window is not None and (window < 1 or cross or not causal):
            raise ValueError(f"window={window}: a sliding window needs a positive number of positions and causal "
                             f"self-attention; got cross={cross}, causal={causal}")
        self.n_embd, self.n_head, self.head_dim = n_embd, n_head, n_embd // n_head
        self.n_kv_head, self.window = n_kv_head, window
        self.causal, self.cross, self.layer_idx = causal, cross, layer_idx
        self.dropout = dropout
        kernel = resolve_kernel(kernel, position_bias)
        self.kernel = get_kernel(kernel)  # resolved once: forward calls it, never looks at a name
        self.kernel_name = kernel if isinstance(kernel, str) else getattr(kernel, "__name__", repr(kernel))
        self.position_bias = position_bias  # a plain object (no parameters): its tensors are registered here
        if position_bias is not None:
            position_bias.attach(self)  # before the projections: the state-dict order stays `er`, `c_attn`, ...
        kv_width = n_kv_head * self.head_dim
        if cross:
            self.q_proj = nn.Linear(n_embd, n_embd, bias=bias)
            self.kv_proj = nn.Linear(n_embd, 2 * kv_width, bias=bias)
        else:
            self.c_attn = nn.Linear(n_embd, n_embd + 2 * kv_width, bias=bias)  # [q | k | v] outputs
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.qk_norm = qk_norm  # a plain flag: forward tests it per call
        if qk_norm:
            self.q_norm, self.k_norm = RMSNorm(self.head_dim, eps=1e-6), RMSNorm(self.head_dim, eps=1e-6)

    def extra_repr(self) -> str:
        extra = "" if self.n_kv_head == self.n_head else f", n_kv_head={self.n_kv_head}"
        extra += "" if self.window is None else f", window={self.window}"
        extra += ", qk_norm=True" if self.qk_norm else ""
        return f"kernel={self.kernel_name!r}, position_bias={self.position_bias!r}{extra}"

    def _heads(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        return x.view(b, t, c // self.head_dim, self.head_dim).transpose(1, 2)  # (B, H or Hkv, T, D)

    def forward(
        self,
        x: Tensor,
        *,
        context: Tensor | None = None,
        cache: KVCache | None = None,
        rotary: Callable[[Tensor, int | Tensor], Tensor] | None = None,
    ) -> Tensor:
        """x (B, T, C) -> (B, T, C). With a cache, x holds only the T new positions.

        With a static cache (`KVCache.make_static`) keys and values are the whole buffers and the
        keys not written yet are masked; rotary then receives the tensor position as its offset.
        """
        b, t, c = x.shape
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a `context` tensor (B, S, C)")
            q = self._heads(self.q_proj(x))
            k, v = (self._heads(z) for z in self.kv_proj(context).split(self.n_kv_head * self.head_dim, dim=2))
            if self.qk_norm:
                q, k = self.q_norm(q), self.k_norm(k)
            causal = False
        else:
            if self.n_kv_head == self.n_head:
                # One view + permute instead of split and three transposes: same strides, fewer ops per token.
                q, k, v = self.c_attn(x).view(b, t, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            else:
                kv_width = self.n_kv_head * self.head_dim
                q, k, v = (self._heads(z) for z in self.c_attn(x).split([c, kv_width, kv_width], dim=2))
            if self.qk_norm:  # before rotary and the cache (module docstring)
                q, k = self.q_norm(q), self.k_norm(k)
            causal = self.causal
            if cache is not None:
                static = cache.position is not None
                if rotary is not None:
                    offset = cache.position if static else cache.pos
                    q, k = rotary(q, offset), rotary(k, offset)
                k, v = cache.update(self.layer_idx, k, v)  # (B, Hkv, S, D), S = pos + T (max_len if static)
                if static:
                    return self._static_attention(q, k, v, cache, b, t, c)
            elif rotary is not None:
                q, k = rotary(q, 0), rotary(k, 0)
        dropout_p = self.dropout if self.training else 0.0
        pb = self.position_bias
        s = k.shape[-2]
        bias = None if pb is None else pb.bias(self, q, s)  # lazy: the kernel decides how to build it
        if self.window is not None and s > self.window:  # else every key a causal query sees is in its window
            bias = extend_bias(bias, window_extra(t, s, self.window, q.device, q.dtype), t, s,
                               extra_masks_future=True)
        y = self.kernel(q, k, v, bias=bias, causal=causal, dropout_p=dropout_p, scale=None)  # (B, H, T, D)
        y = self.c_proj(y.transpose(1, 2).reshape(b, t, c))  # (B, T, C)
        return self.resid_dropout(y) if dropout_p > 0 else y  # the no-op module call costs per decoded token

    def _static_attention(self, q: Tensor, k: Tensor, v: Tensor, cache: KVCache, b: int, t: int, c: int) -> Tensor:
        """Attention of T new queries over a static cache's whole buffers k, v (B, H, max_len, D).

        Fixed shapes (see `KVCache`): the unwritten, future and out-of-window keys are masked through the bias instead
        of sliced off, and a position bias is asked for the tensor positions (`PositionBias.bias_at`).
        Inference only.
        """
        allowed = cache.attention_mask(t)  # (T, max_len)
        if self.window is not None:
            keys = torch.arange(cache.max_len, device=q.device)
            allowed = allowed & (keys > cache.positions(t).unsqueeze(1) - self.window)
        pb = self.position_bias
        if pb is None:
            bias = torch.zeros((), dtype=q.dtype, device=q.device)
        else:
            bias = pb.bias_at(self, q, cache.positions(t), cache.max_len)  # (B, H, T, max_len)
        bias = bias.masked_fill(~allowed, float("-inf"))
        y = self.kernel(q, k, v, bias=bias, causal=False, dropout_p=0.0, scale=None)  # (B, H, T, D)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))  # (B, T, C)
