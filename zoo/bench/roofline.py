"""Decoding at the memory limit: achieved tokens/s against bandwidth / bytes-per-token, per precision.

Method. The memory bandwidth is measured in the same run: the median of three `.sum()`s over a
`roofline_gib` float32 tensor (far larger than any cache), at the run's thread count (the roofline uses
this one) and at every core (context). One decoding step at batch B reads every weight once (in its
stored precision: fp32, bf16, int8 + scales, int4 + scales) and each row's KV cache up to its position;
bytes/step = weight bytes + B x KV bytes at the mean position (prompt + new/2), embedding tables excluded
(a step reads B rows of them), a tied head counted once. The roofline is B x bandwidth / bytes-per-step
tokens/s; a row's ratio is achieved / roofline per round, achieved = B x new tokens / wall time of one
greedy `zoo.sampling.generate` call (the short prompt's prefill included, so the figure is conservative).

Models: GPT-2-124M's shapes (the real GPT-2 when transformers finds it in the Hugging Face cache, else
random weights with GPT-2's init); fp32, bf16 (where the CPU has native bf16 matmuls: avx512_bf16 or AMX),
int8 and int4 (`zoo.core.quant`, CPU kernels). Beside them, transformers' GPT2LMHeadModel at the same
weights with its static cache + torch.compile (compilation in the untimed first call, reported).

The shipped checkpoints (at most 2 M parameters) fit in the CPU's caches: their limit is per-token
overhead, not bandwidth. For them: time per token of `generate` at batch 1 against the time of the
matrix products one token needs (every Linear call recorded during the same decoding, replayed alone on
the same shapes: fp32 as x @ W over (in, out) copies, int8 through `Int8Linear`), per round. Where the preset
compiles zoo's decoding (`zoo_compile_batches` holds 1: the full run), the same fp32 model also decodes with
`compile=True` (one fixed-shape compiled step: the GPT family and the image models), against the same products:
how much of the overhead compilation removes, and what its first call costs.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from zoo.bench.common import Row, Sizes, interleaved, median, ratio_stats, skipped
from zoo.core.quant import Int8Linear, quantize_
from zoo.sampling import generate

GPT2 = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "vocab_size": 50257}


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively: CUDA, or a CPU with avx512_bf16 / AMX (else bf16 is emulated)."""
    if device.type == "cuda":
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bandwidth(gib: float, device: torch.device) -> dict[str, float]:
    """Bytes/s of a streaming read (`.sum()` of a float32 tensor of `gib` GiB), median of 3, at this
    process's thread count ("run") and, on CPU, at every core ("all")."""
    x = torch.ones(int(gib * 2**30) // 4, device=device)

    def rate() -> float:
        times = interleaved({"sum": x.sum}, 3, device, warmup=1)["sum"]
        return x.numel() * 4 / median(times)

    out = {"run": rate(), "threads": torch.get_num_threads()}
    if device.type == "cpu":
        before = torch.get_num_threads()
        torch.set_num_threads(os.cpu_count() or 1)
        try:
            out["all"] = rate()
            out["all_threads"] = torch.get_num_threads()
        finally:
            torch.set_num_threads(before)
    return out


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer a decoding step reads, embedding tables excluded; shared ones once."""
    seen: set[int] = set()
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            continue
        for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]:
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    if hasattr(model, "lm_head") and isinstance(getattr(model, "transformer", None), nn.Module):
        wte = model.transformer.wte.weight  # a head tied to the embedding reads the table: count it once
        if model.lm_head.__dict__.get("_parameters", {}).get("weight") is wte and wte.data_ptr() not in seen:
            total += wte.numel() * wte.element_size()
    return total


def kv_bytes_per_position(model: nn.Module, batch: int) -> float:
    cache = model.new_cache(batch, 64)
    return cache.nbytes / 64


def gpt2_pair(s: Sizes, device: torch.device) -> tuple[nn.Module | None, nn.Module, str]:
    """(transformers GPT2LMHeadModel or None, zoo GPT at its weights, where the weights come from)."""
    from zoo.bench import peers as P

    shape = GPT2 if s.roofline_gpt2 else {"n_layer": s.n_layer, "n_head": s.n_head, "n_embd": s.n_embd,
                                          "block_size": s.roofline_prompt + s.roofline_new, "vocab_size": s.vocab_size}
    try:
        import transformers
    except ImportError:
        torch.manual_seed(0)
        return None, P.zoo_gpt(**shape, activation="gelu_tanh"), "random (transformers not installed)"
    source = "random weights (GPT-2 is not in the Hugging Face cache)"
    hf = None
    if s.roofline_gpt2:
        try:
            hf = transformers.GPT2LMHeadModel.from_pretrained("gpt2", local_files_only=True)
            source = "GPT-2 (openai-community/gpt2 from the Hugging Face cache)"
        except Exception:  # noqa: BLE001 - not cached (no network here): random weights of the same shapes
            hf = None
    if hf is None:
        hf = P.hf_gpt2(**shape, activation="gelu_new", std=0.02, seed=0)
    hf = hf.eval().to(device)
    return hf, P.zoo_from_hf(hf).eval().to(device), source


def variants(zoo: nn.Module, device: torch.device) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """{precision: model} and {precision: why it is absent}."""
    out: dict[str, nn.Module] = {"fp32": zoo}
    missing: dict[str, str] = {}
    if native_bf16(device):
        out["bf16"] = copy.deepcopy(zoo).to(torch.bfloat16)
    else:
        missing["bf16"] = "this CPU has no native bf16 matmul (avx512_bf16 / AMX): bf16 would be emulated"
    for scheme in ("int8", "int4"):
        if device.type == "cpu":
            out[scheme] = quantize_(copy.deepcopy(zoo), scheme)
        else:
            missing[scheme] = "zoo.core.quant has CPU kernels only"
    return out, missing


def run(s: Sizes, device: torch.device) -> tuple[list[Row], dict[str, Any]]:
    bw = bandwidth(s.roofline_gib, device)
    print(f"  bandwidth {bw['run'] / 1e9:.1f} GB/s at {bw['threads']} thread(s)"
          + (f", {bw['all'] / 1e9:.1f} GB/s at {bw['all_threads']}" if "all" in bw else ""), flush=True)
    hf, zoo, source = gpt2_pair(s, device)
    models, missing = variants(zoo, device)
    new, prompt_len = s.roofline_new, s.roofline_prompt
    mean_pos = prompt_len + new / 2
    context: dict[str, Any] = {"bandwidth_bytes_per_s": bw, "weights": source, "new_tokens": new,
                               "prompt": prompt_len, "mean_position": mean_pos, "absent": missing,
                               "weight_bytes": {p: weight_bytes(m) for p, m in models.items()},
                               "first_call_s": {}, "tokens_per_s": {}}
    rows: list[Row] = []
    for b in s.roofline_batches:
        section = f"roofline batch {b}"
        ids = torch.randint(0, zoo.config.vocab_size, (b, prompt_len), generator=torch.Generator().manual_seed(b))
        ids = ids.to(device)
        fns: dict[str, Callable[[], Any]] = {
            f"zoo {p}": (lambda m=m, ids=ids: generate(m, ids, temperature=0, max_new_tokens=new))
            for p, m in models.items()}
        if hf is not None and s.hf_compile:
            from zoo.bench.decode import _hf_static_kwargs

            def hf_run(ids: torch.Tensor = ids) -> Any:
                with torch.no_grad():
                    return hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new,
                                       min_new_tokens=new, **_hf_static_kwargs(device))
            fns["transformers static cache + compile (fp32)"] = hf_run
        elif hf is not None:
            rows.append(skipped(section, "transformers static cache + compile", "skipped in this mode (compiling "
                                "transformers' decode step takes about a minute on CPU): run the full section"))
        first: dict[str, float] = {}
        for name in list(fns):  # the untimed first call: compilation (int8's fused kernel, transformers' step)
            try:
                first[name] = interleaved({name: fns[name]}, 1, device, warmup=0)[name][0]
            except Exception as e:  # noqa: BLE001 - a failing path is reported, the rest goes on
                rows.append(skipped(section, name, f"failed: {type(e).__name__}: {str(e)[:200]}"))
                del fns[name]
        context["first_call_s"][section] = first
        times = interleaved(fns, s.rounds, device, warmup=0)
        rates = {n: b * new / median(t) for n, t in times.items()}
        context["tokens_per_s"][section] = rates
        kv = {p: kv_bytes_per_position(m, b) * mean_pos for p, m in models.items()}
        for p in models:
            name = f"zoo {p}"
            if name not in times:
                continue
            step = context["weight_bytes"][p] + kv[p]
            roof_t = new * step / bw["run"]  # seconds for `new` steps at the roofline
            rows.append(Row(section, f"{name}: achieved / roofline", "achieved / roofline tokens/s",
                            ratio_stats([roof_t] * len(times[name]), times[name]),
                            {"tokens/s": rates[name], "roofline tokens/s": b * new / roof_t,
                             "MB/step": step / 1e6, "KV MB/step": kv[p] / 1e6}))
        for p in [p for p in models if p != "fp32" and f"zoo {p}" in times]:
            rows.append(Row(section, f"zoo {p} vs zoo fp32", "tokens/s ratio",
                            ratio_stats(times["zoo fp32"], times[f"zoo {p}"]),
                            {"tokens/s": rates[f"zoo {p}"], "fp32 tokens/s": rates["zoo fp32"]}))
        peer = next((n for n in times if n.startswith("transformers")), None)
        if peer is not None:
            step = context["weight_bytes"]["fp32"] + kv["fp32"]
            rows.append(Row(section, f"{peer}: achieved / roofline", "achieved / roofline tokens/s",
                            ratio_stats([new * step / bw["run"]] * len(times[peer]), times[peer]),
                            {"tokens/s": rates[peer], "first call s": first.get(peer, float("nan"))}))
            for p in [p for p in models if f"zoo {p}" in times]:
                rows.append(Row(section, f"zoo {p} vs {peer}", "zoo / peer tokens/s",
                                ratio_stats(times[peer], times[f"zoo {p}"]),
                                {"zoo tokens/s": rates[f"zoo {p}"], "peer tokens/s": rates[peer]}))
        print(f"  {section}: " + ", ".join(f"{n} {r:.1f} tok/s" for n, r in rates.items()), flush=True)
    more, context["overhead"] = overhead(s, device)
    return rows + more, context


class _Recorder:
    """Forward hooks on every nn.Linear / Int8Linear: the (module, rows) of each call."""

    def __init__(self, model: nn.Module) -> None:
        self.calls: list[tuple[nn.Module, int]] = []
        self.handles = [m.register_forward_hook(self._hook) for m in model.modules()
                        if type(m) is nn.Linear or isinstance(m, Int8Linear)]

    def _hook(self, m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        self.calls.append((m, args[0].numel() // args[0].shape[-1]))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _products(calls: list[tuple[nn.Module, int]], device: torch.device) -> Callable[[], None]:
    """Replays the recorded products alone: fp32 Linears as x @ W over (in, out) copies, quantised ones as is."""
    work: list[Callable[[], Any]] = []
    for m, rows in calls:
        x = torch.randn(rows, m.in_features, device=device)
        if type(m) is nn.Linear:
            w = m.weight.detach().t().contiguous()
            work.append(lambda x=x, w=w, bias=m.bias: torch.mm(x, w) if bias is None else torch.addmm(bias, x, w))
        else:
            work.append(lambda x=x, m=m: m(x))

    def replay() -> None:
        with torch.no_grad():
            for f in work:
                f()
    return replay


def overhead(s: Sizes, device: torch.device) -> tuple[list[Row], dict[str, Any]]:
    """Each shipped checkpoint at batch 1, fp32 and int8: time per token against its products' time alone."""
    import zoo

    names = zoo.list_models() if s.roofline_shipped is None else list(s.roofline_shipped)
    names = [n for n in names if not n.startswith("gpt2")]
    rows: list[Row] = []
    context: dict[str, Any] = {}
    # compile=True below compiles one graph per checkpoint: past torch._dynamo's 8 it would quietly run eager
    with torch._dynamo.config.patch(recompile_limit=64):
        for name in names:
            rows += _overhead_rows(name, s, device, context)
    return rows, context


def _overhead_rows(name: str, s: Sizes, device: torch.device, context: dict[str, Any]) -> list[Row]:
    """One checkpoint's overhead rows (see `overhead`); its context entries go into `context`."""
    import zoo

    rows: list[Row] = []
    section = "overhead batch 1"
    fns: dict[str, Callable[[], Any]] = {}
    per_token: dict[str, int] = {}
    for scheme in (None, "int8") if device.type == "cpu" else (None,):
        m = zoo.load(name, device=device, quantize=scheme).model
        new = min(s.roofline_new, m.max_len - 1)
        run_one = (lambda m=m, new=new: generate(m, [[0]], temperature=0, max_new_tokens=new))
        run_one()  # warm-up (and the fused int8 kernel's compilation)
        rec = _Recorder(m)
        try:
            run_one()
        finally:
            rec.close()
        label = scheme or "fp32"
        fns[f"{label} decode"], fns[f"{label} products"] = run_one, _products(rec.calls, device)
        per_token[label] = new
        context[f"{name} {label}"] = {"products_per_token": len(rec.calls) / new, "new_tokens": new}
        if scheme is None and 1 in s.zoo_compile_batches and hasattr(m, "decode_step_static"):
            compiled = (lambda m=m, new=new: generate(m, [[0]], temperature=0, max_new_tokens=new, compile=True))
            start = time.perf_counter()
            compiled()
            context[f"{name} fp32 compiled"] = {"first_call_s": time.perf_counter() - start}
            fns["fp32 compiled decode"] = compiled
    times = interleaved(fns, s.rounds, device, warmup=1)
    for label, new in per_token.items():
        dec, prod = times[f"{label} decode"], times[f"{label} products"]
        rows.append(Row(section, f"{name} {label}: time per token / its products' time", "overhead ratio",
                        ratio_stats(dec, prod),
                        {"ms/token": median(dec) / new * 1e3, "products ms/token": median(prod) / new * 1e3}))
        if label == "fp32" and "fp32 compiled decode" in times:
            comp = times["fp32 compiled decode"]
            rows.append(Row(section, f"{name} fp32 compiled (compile=True): time per token / its products' time",
                            "overhead ratio", ratio_stats(comp, prod),
                            {"ms/token": median(comp) / new * 1e3, "products ms/token": median(prod) / new * 1e3,
                             "vs eager": median(dec) / median(comp),
                             "first call s": context[f"{name} fp32 compiled"]["first_call_s"]}))
    print(f"  {section} {name}: " + ", ".join(f"{n} {median(t) / per_token[n.split()[0]] * 1e3:.2f} ms/token"
                                              for n, t in times.items()), flush=True)
    return rows
