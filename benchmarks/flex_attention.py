"""FlexAttention (`torch.nn.attention.flex_attention`) on CPU against zoo's kernels, forward only, T=1024.

Per case (B=1, H=8, D=64, float32, one thread, interleaved rounds): causal SDPA (the goal's yardstick), zoo's
path (relative: `chunked` with the fused RelativeBias; window / ALiBi: `sdpa` with the ExtendedBias / dense
bias), and flex_attention compiled (CPU flex needs torch.compile) with the same mask and bias as a
score_mod / block mask. Relative as a score_mod: the (B, H, T, L) table q · er is built first (what the skew
saves memory on), the score_mod gathers q_idx - kv_idx from it. Every flex output is checked against
`math_attention` first.

    python benchmarks/flex_attention.py [--rounds 5]    # writes benchmarks/flex_attention.json

(other options are added to the name: --T 2048 writes flex_attention_T-2048.json; `stem`)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from zoo.bench.common import changed_options, output_stem
from zoo.core.kernels import chunked_attention, extend_bias, math_attention, window_extra
from zoo.core.positions import RelativeBias, alibi_slopes


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--T", type=int, default=1024)
    ap.add_argument("--window", type=int, default=256)
    return ap


def stem(args: argparse.Namespace) -> str:
    """The output file's name (no suffix): flex_attention, then each option that differs from its default."""
    return output_stem("flex_attention", changed_options(parser(), args))


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(1)
    b, h, t, d, w = 1, 8, args.T, 64, args.window
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, h, t, d, generator=g) for _ in range(3))
    er = torch.randn(h, t, d, generator=g) * d**-0.5  # L = T distances
    slopes = alibi_slopes(h).float()
    scale = d**-0.5
    flex = torch.compile(flex_attention, dynamic=False)
    causal = create_block_mask(lambda b_, h_, qi, ki: qi >= ki, None, None, t, t, device="cpu")
    windowed = create_block_mask(lambda b_, h_, qi, ki: (qi >= ki) & (qi - ki < w), None, None, t, t, device="cpu")
    dist = torch.arange(t).unsqueeze(1) - torch.arange(t)
    alibi_dense = (-slopes.view(1, h, 1, 1) * dist.clamp(min=0).float())

    def flex_relative():
        rel = torch.einsum("bhtd,hld->bhtl", q, er) * scale  # (B, H, T, L): q · er[distance], scaled
        return flex(q, k, v, score_mod=lambda s, b_, h_, qi, ki: s + rel[b_, h_, qi, qi - ki], block_mask=causal)

    def alibi_mod(s, b_, h_, qi, ki):
        return s - slopes[h_] * (qi - ki)

    cases = {
        "relative": {
            "zoo chunked (fused relative)": lambda: chunked_attention(q, k, v, bias=RelativeBias(q, er, t), causal=True,
                                                                      dropout_p=0.0, scale=None),
            "flex score_mod": flex_relative,
            "oracle": lambda: math_attention(q, k, v, bias=RelativeBias(q, er, t), causal=True),
        },
        "window": {
            "zoo sdpa (window bias)": lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=extend_bias(None, window_extra(t, t, w, q.device, q.dtype), t, t).dense()),
            "flex block_mask": lambda: flex(q, k, v, block_mask=windowed),
            "oracle": lambda: math_attention(q, k, v, bias=extend_bias(None, window_extra(t, t, w, q.device, q.dtype),
                                                                       t, t), causal=True),
        },
        "alibi": {
            "zoo sdpa (dense bias)": lambda: F.scaled_dot_product_attention(
                q, k, v, attn_mask=alibi_dense.masked_fill(dist < 0, float("-inf"))),
            "flex score_mod": lambda: flex(q, k, v, score_mod=alibi_mod, block_mask=causal),
            "oracle": lambda: math_attention(q, k, v, bias=alibi_dense, causal=True),
        },
    }
    sdpa_causal = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    results = {}
    with torch.no_grad():
        for name, fns in cases.items():
            want = fns.pop("oracle")()
            first = {}
            for label, fn in fns.items():
                start = time.perf_counter()
                got = fn()
                first[label] = time.perf_counter() - start
                err = (got - want).abs().max().item()
                assert err < 1e-4, f"{name} {label}: max abs error {err} vs math"
            fns = {"sdpa causal": sdpa_causal, **fns}
            times = {label: [] for label in fns}
            for r in range(args.rounds):
                for label in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                    start = time.perf_counter()
                    fns[label]()
                    times[label].append(time.perf_counter() - start)
            med = {label: sorted(x)[len(x) // 2] * 1e3 for label, x in times.items()}
            results[name] = {"median_ms": med, "x_causal_sdpa": {k_: m / med["sdpa causal"] for k_, m in med.items()},
                             "first_call_s": first}
            print(name, {k_: f"{m:.1f} ms ({m / med['sdpa causal']:.2f}x)" for k_, m in med.items()}, flush=True)
    report = {"args": vars(args), "torch": torch.__version__, "results": results}
    Path(__file__).with_name(f"{stem(args)}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
