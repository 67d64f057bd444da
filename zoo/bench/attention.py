"""Music Transformer relative attention: zoo's relative position bias vs naive Shaw and vs plain causal SDPA.

One attention call, batch 1, `attn_heads` heads of `attn_head_dim`, max_relative_position = T (every
distance has an embedding, the paper's setting), float32. Peers:
- `zoo relative`: `zoo.core.positions.relative_self_attention` (the skew's `RelativeBias` through the
  `chunked` kernel), exactly what `MultiHeadAttention` with a `RelativePositionBias` (a model config's
  `bias: relative`) runs between its projections; whatever version is installed.
- `naive Shaw`: one embedding gathered per (query, key) pair, a (H, T, S, D) tensor (Shaw et al. 2018),
  O(T^2 D) memory: only for T <= `attn_naive_max_t`.
- `causal SDPA`: `F.scaled_dot_product_attention(is_causal=True)` without any position term, the floor.
"fwd" is an inference forward (`torch.no_grad()`); "fwd+bwd" a forward with autograd and the backward of
`out.sum()` into q, k, v and the table. Peak memory: bytes allocated above what was live before one
forward+backward (CPU: the profiler's allocator events; CUDA: `max_memory_allocated`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.bench.common import Row, Sizes, cpu_peak_bytes, interleaved, median, ratio_stats, skipped, sync
from zoo.core.positions import relative_self_attention


def naive_shaw(q: Tensor, k: Tensor, v: Tensor, er: Tensor) -> Tensor:
    """softmax((q k^T + q . e_ij) / sqrt(D)) v with e_ij = er[i - j] gathered per pair, causal."""
    t, s, d = q.shape[2], k.shape[2], q.shape[3]
    dist = torch.arange(s - t, s, device=q.device).unsqueeze(1) - torch.arange(s, device=q.device)  # (T, S)
    n = er.shape[1]
    table = torch.cat([er, er.new_zeros(er.shape[0], 1, d)], dim=1)  # (H, L + 1, D): row L = zero embedding
    emb = table[:, torch.where((dist >= 0) & (dist < n), dist, n)]  # (H, T, S, D): the O(T^2 D) tensor
    rel = (q.unsqueeze(3) @ emb.transpose(-1, -2)).squeeze(3)  # (B, H, T, 1, D) @ (H, T, D, S) -> (B, H, T, S)
    att = (q @ k.transpose(-1, -2) + rel) / math.sqrt(d)
    return att.masked_fill(dist < 0, float("-inf")).softmax(-1) @ v


PEERS: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]] = {
    "zoo relative": lambda q, k, v, er: relative_self_attention(q, k, v, er),
    "naive Shaw": naive_shaw,
    "causal SDPA": lambda q, k, v, er: F.scaled_dot_product_attention(q, k, v, is_causal=True),
}


def _inputs(s: Sizes, t: int, device: torch.device) -> list[Tensor]:
    g = torch.Generator().manual_seed(t)
    h, d = s.attn_heads, s.attn_head_dim
    q, k, v = (torch.randn(1, h, t, d, generator=g).to(device) for _ in range(3))
    er = (torch.randn(h, t, d, generator=g) * d**-0.5).to(device)
    return [x.requires_grad_() for x in (q, k, v, er)]


def _call(name: str, inputs: list[Tensor], mode: str) -> None:
    if mode == "fwd":
        with torch.no_grad():
            PEERS[name](*inputs)
        return
    for x in inputs:
        x.grad = None
    PEERS[name](*inputs).sum().backward()


def peak_bytes(name: str, inputs: list[Tensor], device: torch.device) -> int:
    """Peak bytes allocated by one forward+backward above what was live before it."""
    for x in inputs:
        x.grad = None
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _call(name, inputs, "fwd+bwd")
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    return cpu_peak_bytes(lambda: _call(name, inputs, "fwd+bwd"))


def check_same(inputs: list[Tensor], t: int, naive: bool) -> float:
    """Max abs difference between zoo's relative attention and naive Shaw (the oracle), or vs itself."""
    with torch.no_grad():
        a = PEERS["zoo relative"](*inputs)
        if not naive:
            return 0.0
        b = naive_shaw(*inputs)
    diff = (a - b).abs().max().item()
    if not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
        raise AssertionError(f"zoo relative attention differs from naive Shaw at T={t}: max abs diff {diff:.3g}")
    return diff


def run(s: Sizes, device: torch.device) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    context: dict[str, Any] = {"heads": s.attn_heads, "head_dim": s.attn_head_dim, "batch": 1,
                               "naive_max_T": s.attn_naive_max_t, "gates": {}}
    for t in s.attn_lengths:
        inputs = _inputs(s, t, device)
        naive = t <= s.attn_naive_max_t
        section = f"attention T={t}"
        try:
            context["gates"][section] = {"max_abs_diff_vs_naive": check_same(inputs, t, naive)}
        except AssertionError as e:
            rows.append(skipped(section, "zoo relative", f"correctness gate failed: {e}", status="gate failed"))
            continue
        peers = [p for p in PEERS if p != "naive Shaw" or naive]
        if not naive:
            rows.append(skipped(section, "naive Shaw vs zoo relative",
                                f"T={t} > {s.attn_naive_max_t}: naive Shaw needs O(T^2 D) memory "
                                f"(~{3 * s.attn_heads * t * t * s.attn_head_dim * 4 / 2**30:.1f} GiB) and minutes"))
        memory = {p: peak_bytes(p, inputs, device) for p in peers}
        for mode in ("fwd", "fwd+bwd"):
            times = interleaved({p: (lambda p=p, x=inputs, m=mode: _call(p, x, m)) for p in peers}, s.rounds, device)
            fig = {f"{p} ms": 1e3 * median(times[p]) for p in peers}
            if mode == "fwd+bwd":
                fig |= {f"{p} peak MiB": memory[p] / 2**20 for p in peers}
            rows.append(Row(section, f"{mode}: zoo relative vs causal SDPA", "zoo / SDPA time",
                            ratio_stats(times["zoo relative"], times["causal SDPA"]), fig))
            if naive:
                rows.append(Row(section, f"{mode}: naive Shaw vs zoo relative", "naive / zoo time",
                                ratio_stats(times["naive Shaw"], times["zoo relative"]),
                                {"naive / zoo peak memory": memory["naive Shaw"] / max(1, memory["zoo relative"])}
                                if mode == "fwd+bwd" else {}))
            print(f"  {section} {mode}: " + ", ".join(f"{p} {1e3 * median(times[p]):.1f} ms" for p in peers),
                  flush=True)
    return rows, context
