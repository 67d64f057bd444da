"""What every benchmark section shares: sizes, timing in interleaved rounds, ratio statistics, rows.

Method (issue 7). One thread (`torch.set_num_threads(1)`): on a shared machine more threads make
ratios swing 0.4-3x. Every peer of a comparison runs once per round, the order reversed every other
round so that both see the same machine load, after one untimed warm-up call each. A ratio is taken
per round (peer i with peer j of the same round) and the median over rounds is reported with its
min-max spread; absolute figures (medians) are context only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

SECTIONS = ("gpt", "decode", "attention", "image", "roofline")


@dataclass(kw_only=True)
class Sizes:
    """Every size the suite uses; `sizes(mode)` gives the full, quick and tiny presets."""

    mode: str = "full"
    rounds: int = 7  # interleaved rounds per comparison
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    block_size: int = 256  # training T
    batch: int = 8
    vocab_size: int = 8192
    precisions: tuple[str, ...] = ("fp32", "bf16-mixed")
    lightning_precisions: tuple[str, ...] = ("fp32", "bf16-mixed")
    matmul_sizes: tuple[int, ...] = (256, 512, 1024, 2048)  # the peak: the fastest (n, n) @ (n, n) product
    gate_tokens: int = 24  # greedy tokens compared by the correctness gate
    decode_prompt: int = 16
    decode_new: int = 256
    decode_batches: tuple[int, ...] = (1, 8)
    hf_compile: bool = True  # transformers static cache + torch.compile row
    zoo_compile_batches: tuple[int, ...] = (1, 8)  # zoo's opt-in compiled decoding (where it exists) at these
    attn_lengths: tuple[int, ...] = (256, 1024, 2048, 4096)
    attn_naive_max_t: int = 512  # naive Shaw is O(T^2 D) memory and 50-100x slower: small T only
    attn_heads: int = 8
    attn_head_dim: int = 64
    image_batches: tuple[int, ...] = (1, 16)
    image_model: str = "image-gpt-digits"  # zoo.load name; a same-size random model if unavailable
    gpt2_124m: bool = False  # CUDA only: GPT-2-124M training MFU, bf16, compiled
    roofline_gpt2: bool = True  # roofline section: GPT-2-124M's shapes (False: the n_layer/n_embd above)
    roofline_prompt: int = 8
    roofline_new: int = 64
    roofline_batches: tuple[int, ...] = (1, 8)
    roofline_gib: float = 1.0  # the streaming read that measures memory bandwidth
    roofline_shipped: tuple[str, ...] | None = None  # checkpoints timed against their products; None = all

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sizes(mode: str, device: str = "cpu", rounds: int | None = None) -> Sizes:
    """The preset for `mode` in ("full", "quick", "tiny"); `rounds` overrides the preset's rounds."""
    if mode == "full":
        s = Sizes()
    elif mode == "quick":
        # Issue 25: within 3 minutes on a shared 2-core CPU under load (a full `zoo-bench` keeps the larger sizes):
        # half the training batch and decoded tokens, no compiled decoding (compiling took 5-50 s), and the
        # roofline at batch 1 on 8 new tokens with one shipped checkpoint.
        s = Sizes(mode="quick", rounds=3, batch=4, decode_new=128, lightning_precisions=("fp32",),
                  attn_lengths=(256, 1024), attn_naive_max_t=256, hf_compile=False, zoo_compile_batches=(),
                  roofline_new=8, roofline_batches=(1,), roofline_shipped=("gpt-pydoc",))
    elif mode == "tiny":  # tests: seconds, not meaningful figures
        s = Sizes(mode="tiny", rounds=2, n_layer=1, n_head=2, n_embd=32, block_size=16, batch=2, vocab_size=64,
                  lightning_precisions=("fp32",), matmul_sizes=(32, 64), gate_tokens=6, decode_prompt=4, decode_new=8,
                  decode_batches=(1, 2), hf_compile=False, zoo_compile_batches=(), attn_lengths=(32, 64),
                  attn_naive_max_t=32, attn_heads=2, attn_head_dim=8, image_batches=(2,), image_model="random",
                  roofline_gpt2=False, roofline_prompt=2, roofline_new=4, roofline_batches=(1, 2), roofline_gib=0.03,
                  roofline_shipped=("image-gpt-digits",))
    else:
        raise ValueError(f"unknown benchmark mode {mode!r}; accepted: 'full', 'quick', 'tiny'")
    if device == "cuda":
        s.gpt2_124m = mode != "tiny"
        s.rounds = max(s.rounds, 5)
        s.attn_naive_max_t = min(2048, max(s.attn_lengths)) if mode != "tiny" else s.attn_naive_max_t
        s.hf_compile = mode != "tiny"
    if rounds is not None:
        if rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {rounds}")
        s.rounds = rounds
    return s


# Issue 25: on a CPU without native bfloat16 (no AVX512-BF16 / AMX: bf16 products are emulated) `zoo-bench --quick`
# ran past 10 minutes in its bf16-mixed training rows. Above this many times the float32 time of the probe's product,
# --quick skips those rows (printing why); on CPUs with native bf16 the product is faster in bf16 than in float32.
BF16_SLOW = 3.0


def bf16_slowdown(device: torch.device | str = "cpu", n: int = 256, calls: int = 5) -> float:
    """How many times longer an (n, n) @ (n, n) product takes in bfloat16 than in float32 on `device`: the best of
    `calls` interleaved calls each, after one warm-up (a few ms in all where bf16 is native)."""
    g = torch.Generator().manual_seed(0)
    pairs = {dt: (torch.randn(n, n, generator=g).to(device, dt), torch.randn(n, n, generator=g).to(device, dt))
             for dt in (torch.float32, torch.bfloat16)}
    best = dict.fromkeys(pairs, float("inf"))
    for i in range(calls + 1):
        for dt, (a, b) in pairs.items():
            t = timed(lambda a=a, b=b: torch.mm(a, b), device)
            if i:  # the first call of each is the warm-up
                best[dt] = min(best[dt], t)
    return best[torch.bfloat16] / best[torch.float32]


def skip_slow_bf16(s: Sizes, device: torch.device) -> str | None:
    """The --quick plan on a CPU: drop the bf16-mixed rows from `s` when `bf16_slowdown` exceeds BF16_SLOW; return
    the one-line reason (None when nothing is skipped). The full suite keeps every row (it is asked to be complete)."""
    if s.mode != "quick" or device.type != "cpu" or s.precisions == ("fp32",):
        return None
    slow = bf16_slowdown(device)
    if slow <= BF16_SLOW:
        return None
    s.precisions = tuple(p for p in s.precisions if p == "fp32")
    s.lightning_precisions = tuple(p for p in s.lightning_precisions if p == "fp32")
    return (f"bf16-mixed rows skipped: a 256x256 bfloat16 matmul took {slow:.1f}x the float32 one on this CPU "
            f"(> {BF16_SLOW:g}x: no native bf16, it would take minutes); the full `zoo-bench` still times them")


# ---- timing ------------------------------------------------------------------------------------
def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: torch.device | str = "cpu") -> float:
    """Wall seconds of one call (the device synchronised before and after)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, device: torch.device | str = "cpu",
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call, `rounds` per peer: every peer once per round, order reversed every other round.

    `warmup` untimed calls per peer come first (allocator, lazy init, optimizer state, compilation).
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    sync(device)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            out[n].append(timed(fns[n], device))
    return out


def ratio_stats(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """Per-round ratios numerators[i] / denominators[i]: median, min, max and the ratios themselves.

    For "A is x times as fast as B" pass B's times as numerators and A's as denominators.
    """
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError(f"ratio_stats needs two equally long, non-empty lists of per-round values, got "
                         f"{len(numerators)} and {len(denominators)}")
    ratios = [a / b for a, b in zip(numerators, denominators)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": len(ratios),
            "per_round": ratios}


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


# ---- the machine: its CPU, its own peak ------------------------------------------------------------------------

def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def matmul_peak_fn(n: int, dtype: torch.dtype, device: torch.device | str,
                   reps: int = 1) -> tuple[Callable[[], Any], float]:
    """A call doing `reps` (n, n) @ (n, n) products in `dtype`, and its FLOPs (reps * 2 n^3)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def call() -> None:
        for _ in range(reps):
            torch.mm(a, b, out=out)

    return call, reps * 2.0 * n**3


def calibrate_peak(dtype: torch.dtype, device: torch.device | str, sizes: Sequence[int],
                   call_s: float = 0.25) -> tuple[Callable[[], Any], float, dict[str, Any]]:
    """The machine's matmul peak: the fastest square size in `sizes`, repeated so that one call lasts ~call_s.

    Each size is timed a few times (best of 3); the winner's call then runs inside the timed rounds, so that
    its rate sees the same load as the step it is compared with (a call lasting milliseconds would not).
    """
    best: tuple[float, int, float] | None = None
    for n in sizes:
        fn, flops = matmul_peak_fn(n, dtype, device)
        fn()
        t = min(timed(fn, device) for _ in range(3))
        if best is None or flops / t > best[0]:
            best = (flops / t, n, t)
    assert best is not None, "calibrate_peak needs at least one size"
    rate, n, t = best
    reps = max(1, round(call_s / t))
    fn, flops = matmul_peak_fn(n, dtype, device, reps)
    return fn, flops, {"n": n, "reps": reps, "calibration_flops_per_s": rate}


# Dense (no sparsity) peak TFLOP/s from vendor data sheets, by a substring of torch.cuda.get_device_name().
NOMINAL_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                       "H100 NVL": 835.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0,
                       "RTX 4090": 165.0, "B200": 2250.0, "GH200": 989.0}


def nominal_bf16_tflops(device_name: str) -> float | None:
    for key, value in sorted(NOMINAL_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if key in device_name:
            return value
    return None


def gpt_flops_per_token(n_params: int, n_layer: int, seq_len: int, n_embd: int) -> float:
    """Training FLOPs per token, 6 N + 12 L T d (PaLM appendix B; nanoGPT's estimate_mfu).

    N counts the parameters that take part in matrix products: the (tied) token embedding counts once,
    as the LM head; learned position embeddings are excluded (an addition, no product).
    """
    return 6.0 * n_params + 12.0 * n_layer * seq_len * n_embd


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters excluding position-embedding tables (names containing 'wpe' or 'pos_emb')."""
    seen: set[int] = set()
    total = 0
    for name, p in model.named_parameters():  # named_parameters() already yields a tied tensor once
        if id(p) in seen or "wpe" in name or "pos_emb" in name:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


# ---- rows ----------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the results table: a comparison, its per-round ratio statistics and context figures.

    ratio: `ratio_stats` of what `ratio_label` says (e.g. "zoo / peer tokens/s"), None when skipped.
    status: "ok", "skipped" (peer unavailable, too slow for the mode) or "gate failed" (not timed).
    """

    section: str
    name: str
    ratio_label: str = ""
    ratio: dict[str, Any] | None = None
    figures: dict[str, float | str] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def skipped(section: str, name: str, reason: str, status: str = "skipped") -> Row:
    return Row(section, name, status=status, reason=reason)


def fmt_ratio(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    return f"{r['median']:.2f} [{r['min']:.2f}, {r['max']:.2f}]"


def fmt_num(x: float | str) -> str:
    if isinstance(x, str):
        return x
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"


def output_stem(base: str, options: Mapping[str, Any]) -> str:
    """The file name (no suffix) a benchmark command writes: `base`, then `_<option>` for each option set.

    `options` are the command's non-default options (`changed_options`: in the parser's order): a flag that is
    on adds its name, any other value `_<name>-<value>` (lists joined by `-`, floats as `%g`: 40.0 -> 40); None and
    False add nothing. The
    plain command writes `base`, and two commands that measure differently never write the same file (issue 22:
    a full run overwrote the quick run the README cited). Join with a suffix by string (`f"{stem}.json"`), not
    `Path.with_suffix`: a value may hold a point.
    """
    parts = [base]
    for name, value in options.items():
        if value is None or value is False:
            continue
        key = name.replace("_", "-")
        if value is True:
            parts.append(key)
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        text = [f"{x:g}" if isinstance(x, float) else str(x) for x in items]
        parts.append(re.sub(r"[^A-Za-z0-9.=-]+", "-", "-".join([key, *text])).strip("-"))
    return "_".join(parts)


def changed_options(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The options of a benchmark script's `args` that differ from `parser`'s defaults (for `output_stem`);
    `ignore` names the ones that say where to read or write, not what is measured."""
    skip = set(ignore)
    return {k: v for k, v in vars(args).items() if k not in skip and v != parser.get_default(k)}


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak CPU bytes allocated by `fn()` above what was live before it, from torch.profiler's memory
    events ("Total Allocated" is the running sum of allocations minus frees since the profiler started)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    memory = sorted((e for e in events if e.get("name") == "[memory]"), key=lambda e: e["ts"])
    return max([0] + [int(e["args"]["Total Allocated"]) for e in memory])
