"""Relative attention side by side: naive Shaw, zoo's skew (relative position bias), plain causal SDPA.

    python benchmarks/relative_attention.py [--quick] [--device cpu|cuda] [--dtype float32|bfloat16]
        [--rounds N] [--lengths T ...] [--chunk ROWS] [--naive-max-gib GIB] [--out PATH]

(`pip install -e .` first, or run with PYTHONPATH=. from the repository root.) --quick: T = 1024 and
2048 (about 2 minutes on one busy CPU core); without it 4096 too.

Issue 3 (Music Transformer) and issue 7 (benchmark suite). One attention call, batch 1, 8 heads, head
dim 64, `max_relative_position` = T (every distance has its embedding, the paper's setting), float32
unless --dtype bfloat16.

Peers
- `naive_shaw`: Shaw et al.'s formulation, one embedding gathered per (query, key) pair — a
  (H, T, S, D) tensor — then q · e per pair. O(T²·D) memory. Skipped where its estimated peak
  (three (H, T, T, D) tensors alive at once in forward+backward) exceeds --naive-max-gib.
- `zoo_relative`: `relative_self_attention` with its defaults — exactly what `MultiHeadAttention` with a
  `RelativePositionBias` (a model config's `bias: relative`, `kernel: auto`) runs between its projections: the
  `chunked` kernel given the skew's `RelativeBias`. On CPU in float32 that is the
  "matmul" path: per query chunk the skew's logits, Q Kᵀ added onto them by one `baddbmm`, an in-place
  softmax and one product with V, on the keys the chunk can see only; backward recomputes per chunk.
- `zoo_relative_sdpa_bias`: the same with `path="kernel"` — the skew's logits handed per chunk to SDPA
  as its float mask (the path CUDA, bfloat16 and dropout take; zoo's CPU default before issue 7).
- `sdpa_float_mask`: SDPA with a ready-made (B, H, T, T) float mask (the causal mask as 0 / -inf,
  built before timing, no gradient): what passing any per-head additive bias costs by itself, the
  floor of the bias design before a single relative logit is computed.
- `causal_sdpa`: `F.scaled_dot_product_attention(q, k, v, is_causal=True)`, no position term: the
  reference every ratio is taken against.

Method (issue 7): one thread (`torch.set_num_threads(1)`); peers run in interleaved rounds, the order
rotated each round, after one warm-up call each; for every round the ratio peer / causal_sdpa is
taken and the median over rounds is reported with its min-max spread (naive Shaw, 50-100x slower,
only takes part in the first NAIVE_ROUNDS rounds so that the run stays short). Absolute times
(median) are context only. "fwd" is an inference forward (`torch.no_grad()`), "fwd+bwd" a training step of the
attention core (forward with autograd, then backward of `out.sum()` into q, k, v and the table).

Peak memory is allocated bytes above what was live before the call, for forward+backward: inputs
excluded (for `sdpa_float_mask` that includes its prebuilt mask), outputs and gradients included.
On CPU it comes from the PyTorch profiler's allocator events (`profile_memory=True`, the running
"Total Allocated" over every allocation and free, in a separate untimed call), on CUDA from
`torch.cuda.max_memory_allocated`. Both count what PyTorch's allocator hands out, not process RSS.

Writes benchmarks/<stem>.json and .md next to this file (or --out PATH .json/.md), the stem named for the
command (`stem`, issue 22): relative_attention, `_cuda` on CUDA, then each other option that differs from its
default: the committed CPU run, `--rounds 7`, is relative_attention_rounds-7.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.bench.common import changed_options, cpu_name, cpu_peak_bytes, output_stem
from zoo.core.positions import relative_self_attention

HEADS, HEAD_DIM, BATCH = 8, 64, 1
NAIVE_ROUNDS = 2  # naive Shaw is 50-100x slower: timed in the first rounds only, its times are context
PEERS = ("naive_shaw", "zoo_relative", "zoo_relative_sdpa_bias", "sdpa_float_mask", "causal_sdpa")
GOALS = {
    "memory_vs_naive_at_1024": 15.0,  # issue 3: naive / zoo peak memory, at least
    "fwd_bwd_vs_sdpa_at_2048": 5.0,  # issue 3: zoo / causal SDPA time, at most
    "fwd_vs_sdpa": 1.5,  # issue 7, every T
    "fwd_bwd_vs_sdpa": 3.0,  # issue 7, every T
}


def naive_shaw(q: Tensor, k: Tensor, v: Tensor, er: Tensor, mask: Tensor) -> Tensor:
    """softmax((q kᵀ + q·e_ij) / sqrt(D)) v with e_ij = er[i - j] gathered per pair (zero past L)."""
    h, t, s, d = q.shape[1], q.shape[2], k.shape[2], q.shape[3]
    dist = torch.arange(s - t, s, device=q.device).unsqueeze(1) - torch.arange(s, device=q.device)  # (T, S)
    n = er.shape[1]
    table = torch.cat([er, er.new_zeros(h, 1, d)], dim=1)  # (H, L + 1, D): row L is the zero embedding
    emb = table[:, torch.where((dist >= 0) & (dist < n), dist, n)]  # (H, T, S, D): the O(T²·D) tensor
    rel = (q.unsqueeze(3) @ emb.transpose(-1, -2)).squeeze(3)  # (B, H, T, 1, D) @ (H, T, D, S) -> (B, H, T, S)
    att = (q @ k.transpose(-1, -2) + rel) / math.sqrt(d)
    att = att.masked_fill(dist < 0, float("-inf")).softmax(-1)
    return att @ v


CHUNK: dict[str, int | None] = {"rows": None}  # --chunk; None: the library's default


def zoo_relative(q: Tensor, k: Tensor, v: Tensor, er: Tensor, mask: Tensor) -> Tensor:
    return relative_self_attention(q, k, v, er, chunk=CHUNK["rows"])  # what a config's bias=relative runs


def zoo_relative_sdpa_bias(q: Tensor, k: Tensor, v: Tensor, er: Tensor, mask: Tensor) -> Tensor:
    return relative_self_attention(q, k, v, er, chunk=CHUNK["rows"], path="kernel")  # skew logits as SDPA bias


def sdpa_float_mask(q: Tensor, k: Tensor, v: Tensor, er: Tensor, mask: Tensor) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def causal_sdpa(q: Tensor, k: Tensor, v: Tensor, er: Tensor, mask: Tensor) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


FUNCS: dict[str, Callable[..., Tensor]] = {"naive_shaw": naive_shaw, "zoo_relative": zoo_relative,
                                           "zoo_relative_sdpa_bias": zoo_relative_sdpa_bias,
                                           "sdpa_float_mask": sdpa_float_mask, "causal_sdpa": causal_sdpa}


def make_inputs(t: int, device: torch.device, dtype: torch.dtype) -> list[Tensor]:
    g = torch.Generator().manual_seed(t)
    q, k, v = (torch.randn(BATCH, HEADS, t, HEAD_DIM, generator=g).to(device, dtype) for _ in range(3))
    er = (torch.randn(HEADS, t, HEAD_DIM, generator=g) * HEAD_DIM**-0.5).to(device, dtype)
    mask = torch.zeros(BATCH, HEADS, t, t, device=device, dtype=dtype)
    mask.masked_fill_(torch.ones(t, t, dtype=torch.bool, device=device).triu(1), float("-inf"))
    return [x.requires_grad_() for x in (q, k, v, er)] + [mask]


def step(name: str, inputs: list[Tensor], mode: str) -> None:
    if mode == "fwd":
        with torch.no_grad():
            FUNCS[name](*inputs)
        return
    for x in inputs:
        x.grad = None
    FUNCS[name](*inputs).sum().backward()


def timed(name: str, inputs: list[Tensor], mode: str, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step(name, inputs, mode)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_bytes(name: str, inputs: list[Tensor], device: torch.device) -> int:
    """Peak allocated bytes of one forward+backward above what was live before it."""
    for x in inputs:
        x.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(name, inputs, "fwd+bwd")
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    return cpu_peak_bytes(lambda: step(name, inputs, "fwd+bwd"))


def naive_estimate_gib(t: int, dtype: torch.dtype) -> float:
    return 3 * HEADS * t * t * HEAD_DIM * dtype.itemsize / 2**30


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    model = cpu_name()
    return f"{model}, {os.cpu_count()} logical CPUs, 1 thread used"


def run(lengths: list[int], rounds: int, device: torch.device, dtype: torch.dtype,
        naive_max_gib: float) -> dict:
    results = []
    for t in lengths:
        inputs = make_inputs(t, device, dtype)
        est = naive_estimate_gib(t, dtype)
        peers = [p for p in PEERS if p != "naive_shaw" or est <= naive_max_gib]
        skipped = [p for p in PEERS if p not in peers]
        row: dict = {"T": t, "skipped": {p: f"estimated peak {est:.1f} GiB > "
                                            f"--naive-max-gib {naive_max_gib:g}" for p in skipped}}
        for mode in ("fwd", "fwd+bwd"):
            for p in peers:  # warm-up: first-call allocations, lazy init
                step(p, inputs, mode)
            times: dict[str, list[float]] = {p: [] for p in peers}
            for r in range(rounds):
                order = peers[r % len(peers):] + peers[: r % len(peers)]
                for p in order:
                    if p != "naive_shaw" or r < NAIVE_ROUNDS:
                        times[p].append(timed(p, inputs, mode, device))
            row[mode] = {}
            for p in peers:
                ratios = [a / b for a, b in zip(times[p], times["causal_sdpa"])]  # round i with round i
                row[mode][p] = {"median_s": statistics.median(times[p]),
                                "ratio_vs_causal_sdpa": statistics.median(ratios),
                                "ratio_spread": [min(ratios), max(ratios)]}
            print(f"T={t} {mode}: " + ", ".join(
                f"{p} {row[mode][p]['median_s'] * 1e3:.1f} ms ({row[mode][p]['ratio_vs_causal_sdpa']:.2f}x)"
                for p in peers), flush=True)
        row["peak_bytes_fwd_bwd"] = {p: peak_bytes(p, inputs, device) for p in peers}
        if "naive_shaw" in peers:
            row["memory_ratio_naive_over_zoo"] = (row["peak_bytes_fwd_bwd"]["naive_shaw"]
                                                  / row["peak_bytes_fwd_bwd"]["zoo_relative"])
        print(f"T={t} peak MiB: " + ", ".join(f"{p} {b / 2**20:.1f}"
                                              for p, b in row["peak_bytes_fwd_bwd"].items()), flush=True)
        results.append(row)
        del inputs
    return {"results": results}


def goals(report: dict) -> list[dict]:
    rows = {r["T"]: r for r in report["results"]}
    out = []

    def add(goal: str, target: str, value: float | None, met: bool | None) -> None:
        out.append({"goal": goal, "target": target, "value": value, "met": met})

    r = rows.get(1024, {})
    m = r.get("memory_ratio_naive_over_zoo")
    add("peak memory naive / zoo, T=1024", f">= {GOALS['memory_vs_naive_at_1024']:g}x", m,
        None if m is None else m >= GOALS["memory_vs_naive_at_1024"])
    r = rows.get(2048)
    x = r["fwd+bwd"]["zoo_relative"]["ratio_vs_causal_sdpa"] if r else None
    add("fwd+bwd zoo / causal SDPA, T=2048", f"<= {GOALS['fwd_bwd_vs_sdpa_at_2048']:g}x", x,
        None if x is None else x <= GOALS["fwd_bwd_vs_sdpa_at_2048"])
    for t, r in rows.items():
        for mode, key in (("fwd", "fwd_vs_sdpa"), ("fwd+bwd", "fwd_bwd_vs_sdpa")):
            x = r[mode]["zoo_relative"]["ratio_vs_causal_sdpa"]
            add(f"{mode} zoo / causal SDPA, T={t}", f"<= {GOALS[key]:g}x", x, x <= GOALS[key])
    return out


NOTES = """\
Reading the figures: `sdpa_float_mask` is SDPA handed a ready-made per-head float mask, i.e. the
floor of any additive-bias scheme before a single relative logit is computed. Causal SDPA skips the
masked half of the keys; zoo recovers it up to one chunk's corner by chunking queries
(`relative_self_attention`), each chunk touching only the keys it can see.
Why forward stays near 1.8x causal SDPA on CPU at T >= 2048 (1.44x at 1024; profile, torch 2.14.1):
the relative term is a third matrix product as large as Q Kᵀ (every query against every distance up
to its position, T²/2 · D per head), so exact relative attention needs 1.5x the multiply-adds of
causal SDPA's two products. Reaching 1.5x needs the three products plus the softmax to run as
efficiently as SDPA's fused flash kernel; here they are separate MKL calls, and the add (inside
`baddbmm`) and the in-place softmax are extra passes over each chunk's (rows, keys) logits, which at
T >= 2048 no longer fit in L2 (one head of 64 rows x 4096 keys is 1 MiB), so they run at memory
speed. What would close it: a fused kernel that computes the Q·Erᵀ block beside the Q Kᵀ block inside
the flash loop (a C++/Triton-CPU extension, or a FlexAttention variant that can read a second
per-block product), or relative embeddings limited to L < T distances (the third product scales
with L). Forward+backward is well inside 3x: backward recomputes each chunk (8 products per chunk
against flash's 5, but no materialised (T, S) probabilities), which also keeps its peak memory
below causal SDPA's here.
On CPU, SDPA's fused kernel does not return a gradient for a float mask, so `zoo_relative_sdpa_bias`
and `sdpa_float_mask` fall back to SDPA's math path (materialised softmax) in training. On CUDA,
the memory-efficient kernel takes the bias and its gradient, while causal SDPA in bfloat16 runs
FlashAttention, which no float mask can use. Timing on a shared machine: the spread column shows how
much the rounds disagreed; the load averages say how busy the machine was."""


def markdown(report: dict) -> str:
    cfg = report["config"]
    lines = [
        "# Relative attention: naive Shaw vs zoo skew vs causal SDPA",
        "",
        f"Machine: {cfg['machine']}; torch {cfg['torch']}; device {cfg['device']}; "
        f"B={BATCH}, H={HEADS}, D={HEAD_DIM}, L=T, {cfg['dtype']}; {cfg['rounds']} interleaved rounds "
        f"(naive Shaw in the first {NAIVE_ROUNDS}); 1-min load average {cfg['load_before']} before, "
        f"{cfg['load_after']} after"
        + (f"; zoo chunk {cfg['chunk']} rows" if cfg["chunk"] else "")
        + f". Wall time {cfg['wall_s']} s. Generated by `{cfg['command']}`.",
        "",
        "Time ratio = median over rounds of (peer / causal SDPA) in the same round, [min, max] spread; "
        "ms = median absolute time (context only). Peak = allocated MiB above the inputs for fwd+bwd.",
        "",
        "| T | peer | fwd ms | fwd ratio | fwd+bwd ms | fwd+bwd ratio | peak MiB (fwd+bwd) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        for p in PEERS:
            if p in r["skipped"]:
                lines.append(f"| {r['T']} | {p} | skipped: {r['skipped'][p]} | | | | |")
                continue
            f, fb = r["fwd"][p], r["fwd+bwd"][p]
            lines.append(
                f"| {r['T']} | {p} | {f['median_s'] * 1e3:.1f} | {f['ratio_vs_causal_sdpa']:.2f} "
                f"[{f['ratio_spread'][0]:.2f}, {f['ratio_spread'][1]:.2f}] | {fb['median_s'] * 1e3:.1f} | "
                f"{fb['ratio_vs_causal_sdpa']:.2f} [{fb['ratio_spread'][0]:.2f}, {fb['ratio_spread'][1]:.2f}]"
                f" | {r['peak_bytes_fwd_bwd'][p] / 2**20:.1f} |")
    lines += ["", "| goal | target | measured | met |", "|---|---|---|---|"]
    for g in report["goals"]:
        value = "n/a" if g["value"] is None else f"{g['value']:.2f}x"
        met = "n/a" if g["met"] is None else ("yes" if g["met"] else "no")
        lines.append(f"| {g['goal']} | {g['target']} | {value} | {met} |")
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="T = 1024, 2048 only")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="sequence lengths T (default 1024 2048, plus 4096 without --quick)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--chunk", type=int, default=None,
                        help="query rows per chunk for zoo_relative (default: the library's rule)")
    parser.add_argument("--naive-max-gib", type=float, default=8.0,
                        help="skip naive Shaw where its estimated peak exceeds this (GiB)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output path without suffix; .json and .md are written (default: "
                             "benchmarks/relative_attention, `_cuda` on CUDA, then each other option that differs "
                             "from its default, e.g. relative_attention_rounds-7)")
    return parser


def stem(args: argparse.Namespace) -> str:
    """The output name (no suffix) without --out: relative_attention, `_cuda` for --device cuda, then each other
    option that differs from its default in the parser's order (zoo.bench.common.output_stem)."""
    options = {"cuda": args.device == "cuda", **changed_options(parser(), args, ignore=["out", "device"])}
    return output_stem("relative_attention", options)


def main(argv: list[str] | None = None) -> dict:
    parser_ = parser()
    args = parser_.parse_args(argv)
    if args.out is None:
        args.out = Path(__file__).with_name(stem(args))
    if args.device == "cuda" and not torch.cuda.is_available():
        parser_.error("--device cuda: no CUDA device visible")
    torch.set_num_threads(1)  # issue 7: on a shared machine more threads make ratios swing 0.4-3x
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    CHUNK["rows"] = args.chunk
    lengths = args.lengths or ([1024, 2048] if args.quick else [1024, 2048, 4096])
    rounds = args.rounds
    started, load_before = time.perf_counter(), round(os.getloadavg()[0], 2)
    report = run(lengths, rounds, device, dtype, args.naive_max_gib)
    report["config"] = {"quick": args.quick, "device": args.device, "rounds": rounds, "batch": BATCH,
                        "heads": HEADS, "head_dim": HEAD_DIM, "max_relative_position": "T",
                        "dtype": args.dtype, "chunk": args.chunk, "torch": torch.__version__,
                        "machine": machine(device),
                        "command": (" ".join(["python benchmarks/relative_attention.py", *sys.argv[1:]])
                                    if argv is None else f"main({argv!r})"),
                        "wall_s": round(time.perf_counter() - started, 1),
                        "load_before": load_before, "load_after": round(os.getloadavg()[0], 2)}
    report["goals"] = goals(report)
    Path(f"{args.out}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    Path(f"{args.out}.md").write_text(table)
    print(table)
    return report


if __name__ == "__main__":
    main()
