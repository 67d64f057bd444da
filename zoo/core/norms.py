"""Norms the core shares: `RMSNorm` (blocks, and per head on queries and keys with `qk_norm`) and `make_norm`.

Below `attention` in the core's import order, so attention's q/k norm and the blocks' norms are one class.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

NormKind = Literal["layernorm", "rmsnorm"]


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): x / rms(x) · weight over the last dim.

    Computed in float32 at least (half-precision inputs are upcast, float64 stays float64 so that the
    float64 parity tests see no float32 rounding), then cast back to the input's dtype.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def make_norm(kind: NormKind, dim: int, bias: bool = True, eps: float = 1e-5) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; accepted: 'layernorm', 'rmsnorm'")
