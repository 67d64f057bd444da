"""Building blocks every model shares: norms, MLPs, the pre-norm residual block, position embeddings.

Shape legend: B batch, T length, C width (n_embd), H heads, D head dim.
Attribute names follow GPT-2 (`ln_1`, `attn`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`) because module names
are checkpoint format: GPT-2 weights import key for key.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.attention import KVCache, MultiHeadAttention

NormKind = Literal["layernorm", "rmsnorm"]
Activation = Literal["gelu", "gelu_tanh", "swiglu"]


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): x / rms(x) · weight, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def make_norm(kind: NormKind, dim: int, bias: bool = True, eps: float = 1e-5) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; accepted: 'layernorm', 'rmsnorm'")


class MLP(nn.Module):
    """Position-wise feed-forward: GELU (exact or GPT-2's tanh approximation) or SwiGLU.

    SwiGLU (Shazeer 2020) uses a gate projection `c_gate` beside `c_fc`; its hidden width is the
    usual 2/3 · 4C so that parameter counts match the GELU MLP.
    """

    def __init__(self, n_embd: int, *, activation: Activation = "gelu", bias: bool = True,
                 dropout: float = 0.0, hidden: int | None = None) -> None:
        super().__init__()
        self.activation = activation
        if hidden is None:
            hidden = 4 * n_embd if activation != "swiglu" else int(2 * 4 * n_embd / 3)
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias)
        if activation == "swiglu":
            self.c_gate = nn.Linear(n_embd, hidden, bias=bias)
        elif activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"unknown activation {activation!r}; accepted: 'gelu', 'gelu_tanh', 'swiglu'")
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.activation == "swiglu":
            h = F.silu(self.c_gate(x)) * self.c_fc(x)
        else:
            h = F.gelu(self.c_fc(x), approximate="tanh" if self.activation == "gelu_tanh" else "none")
        h = self.c_proj(h)
        # Skipping the no-op module call matters when decoding one token at a time (Python-bound).
        return self.dropout(h) if self.dropout.p > 0 else h


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln_1(x)) [+ cross_attn(ln_cross(x), context)] + mlp(ln_2(x))."""

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        layer_idx: int = 0,
        kernel: str = "sdpa",
        dropout: float = 0.0,
        bias: bool = True,
        norm: NormKind = "layernorm",
        activation: Activation = "gelu",
        causal: bool = True,
        cross_attention: bool = False,
        max_relative_position: int | None = None,
    ) -> None:
        super().__init__()
        attn_kwargs = {"max_relative_position": max_relative_position} if kernel == "relative" else {}
        self.ln_1 = make_norm(norm, n_embd, bias)
        self.attn = MultiHeadAttention(n_embd, n_head, kernel=kernel, dropout=dropout, bias=bias,
                                       causal=causal, layer_idx=layer_idx, **attn_kwargs)
        self.cross_attention = cross_attention  # a plain flag: hasattr() on a Module costs an exception
        if cross_attention:
            self.ln_cross = make_norm(norm, n_embd, bias)
            cross_kernel = "sdpa" if kernel == "relative" else kernel  # no relative positions across streams
            self.cross_attn = MultiHeadAttention(n_embd, n_head, kernel=cross_kernel, dropout=dropout,
                                                 bias=bias, cross=True, layer_idx=layer_idx)
        self.ln_2 = make_norm(norm, n_embd, bias)
        self.mlp = MLP(n_embd, activation=activation, bias=bias, dropout=dropout)

    def forward(self, x: Tensor, *, cache: KVCache | None = None, rotary: RotaryEmbedding | None = None,
                context: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache=cache, rotary=rotary)
        if self.cross_attention:
            x = x + self.cross_attn(self.ln_cross(x), context=context)
        return x + self.mlp(self.ln_2(x))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021, RoFormer eq. 34), "rotate-half" layout.

    Called as `rotary(x, offset)` on q or k (B, H, T, D): rotates position `offset + t` of x.
    The cos/sin table is a non-persistent buffer, so it never enters checkpoints.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dim, got {head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)  # (D/2,)
        angles = torch.outer(torch.arange(max_len).float(), inv_freq)  # (max_len, D/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        t = x.shape[-2]
        if offset + t > self.cos.shape[0]:
            raise ValueError(f"position {offset + t} is past the rotary table of {self.cos.shape[0]}")
        cos = self.cos[offset:offset + t].to(x.dtype)  # (T, D/2)
        sin = self.sin[offset:offset + t].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # (B, H, T, D/2) each
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
