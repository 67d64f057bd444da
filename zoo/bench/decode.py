"""Decoding with the KV cache: `zoo.sampling.generate` vs `transformers` `generate`, greedy, batch 1 and 8.

zoo gets a random GPT2LMHeadModel's weights (gelu_new = zoo's gelu_tanh); both generate the same number of
new tokens after the same prompt, and must produce the same tokens (the gate). tokens/s = batch x new tokens
/ wall time of the whole call, prefill included. transformers runs with its default dynamic cache and,
where compiling is affordable, with `cache_implementation="static"` + torch.compile (its own auto-compile
path, enabled on CPU through `CompileConfig._compile_all_devices`). If `SamplingConfig` has a `compile`
field (an opt-in compiled decode step), zoo is timed both ways.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from zoo.bench import peers as P
from zoo.bench.common import Row, Sizes, interleaved, median, ratio_stats, skipped
from zoo.models.gpt import GPT, GPTConfig
from zoo.sampling import SamplingConfig, generate

STD = 0.3  # a random model at GPT-2's 0.02 repeats one token; larger weights give a stronger token check


def zoo_compile_option() -> str | None:
    """The name of zoo's opt-in compiled-decoding option, if this version of zoo.sampling has one."""
    names = {f.name for f in dataclasses.fields(SamplingConfig)}
    return "compile" if "compile" in names else None


def _hf_static_kwargs(device: torch.device) -> dict[str, Any]:
    """transformers' static cache; it compiles the decode step itself on accelerators (CUDA graphs,
    "reduce-overhead"); on CPU that path must be enabled, and "default" mode used (no CUDA graphs)."""
    if device.type == "cuda":
        return {"cache_implementation": "static"}
    from transformers.generation import CompileConfig

    cc = CompileConfig(fullgraph=False, mode="default")
    cc._compile_all_devices = True  # a private switch: transformers otherwise compiles on accelerators only
    return {"cache_implementation": "static", "compile_config": cc}


def run(s: Sizes, device: torch.device) -> tuple[list[Row], dict[str, Any]]:
    block = s.decode_prompt + s.decode_new
    hf = P.hf_gpt2(n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd, block_size=block, vocab_size=s.vocab_size,
                   activation="gelu_new", std=STD, seed=2).eval().to(device)
    zoo = P.zoo_from_hf(hf).eval().to(device)
    new = s.decode_new
    rows: list[Row] = []
    context: dict[str, Any] = {"block_size": block, "new_tokens": new, "prompt": s.decode_prompt, "gates": {}}
    option = zoo_compile_option()
    context["zoo_compile_option"] = (f"{option}=True timed at batch {list(s.zoo_compile_batches)}" if option
                                     else "none in this zoo version")
    gqa_rows, context["gqa"] = run_gqa(s, device)
    rows += gqa_rows
    for b in s.decode_batches:
        section = f"decode batch {b}"
        prompt = torch.randint(0, s.vocab_size, (b, s.decode_prompt), generator=torch.Generator().manual_seed(b))
        prompt = prompt.to(device)
        mask = torch.ones_like(prompt)

        def hf_run(extra: dict[str, Any], prompt: Tensor = prompt, mask: Tensor = mask) -> list[list[int]]:
            with torch.no_grad():
                out = hf.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=new,
                                  min_new_tokens=new, **extra)
            return out[:, prompt.shape[1]:].tolist()

        fns: dict[str, Callable[[], Any]] = {
            "zoo": lambda prompt=prompt: generate(zoo, prompt, temperature=0, max_new_tokens=new),
            "transformers dynamic cache": lambda: hf_run({}),
        }
        if option and b in s.zoo_compile_batches:
            fns[f"zoo {option}=True"] = lambda prompt=prompt: generate(zoo, prompt, temperature=0, max_new_tokens=new,
                                                                        **{option: True})
        if s.hf_compile:
            fns["transformers static cache + compile"] = lambda: hf_run(_hf_static_kwargs(device))
        else:
            rows.append(skipped(section, "zoo vs transformers static cache + compile",
                                "skipped in this mode: torch.compile of transformers' decode step took ~60 s on "
                                "this CPU (and recompiles); run the full suite"))
        start = time.perf_counter()
        reference = fns["zoo"]()
        first_call: dict[str, float] = {"zoo": time.perf_counter() - start}
        for name in [n for n in fns if n != "zoo"]:  # gate (and first call, which includes any compilation)
            try:
                start = time.perf_counter()
                got = fns[name]()
                first_call[name] = time.perf_counter() - start
            except Exception as e:  # noqa: BLE001 - a failing optional path is reported, the rest goes on
                rows.append(skipped(section, f"zoo vs {name}", f"failed: {type(e).__name__}: {str(e)[:200]}"))
                del fns[name]
                continue
            if got != reference:
                r = next(i for i, (u, v) in enumerate(zip(reference, got)) if u != v)
                pos = next((i for i, (u, v) in enumerate(zip(reference[r], got[r])) if u != v), "length")
                rows.append(skipped(section, f"zoo vs {name}", f"correctness gate failed: greedy tokens differ from "
                                    f"zoo's (row {r}, first at new token {pos})", status="gate failed"))
                del fns[name]
        context["gates"][section] = {"same_greedy_tokens_as_zoo": sorted(n for n in fns if n != "zoo"),
                                     "distinct_tokens": len({t for row in reference for t in row}),
                                     "first_call_s": first_call}
        times = interleaved(fns, s.rounds, device, warmup=0)  # the gate's calls were the warm-up
        tokens = b * new
        for name in fns:
            if name.startswith("zoo"):
                continue
            peer_rate = tokens / median(times[name])
            rows.append(Row(section, f"zoo vs {name}", "zoo / peer tokens/s", ratio_stats(times[name], times["zoo"]),
                            {"zoo tokens/s": tokens / median(times["zoo"]), "peer tokens/s": peer_rate,
                             "peer first call s": first_call.get(name, float("nan"))}))
            zc = f"zoo {option}=True"
            if zc in fns:
                rows.append(Row(section, f"{zc} vs {name}", "zoo / peer tokens/s",
                                ratio_stats(times[name], times[zc]),
                                {"zoo tokens/s": tokens / median(times[zc]), "peer tokens/s": peer_rate,
                                 "zoo first call s": first_call.get(zc, float("nan"))}))
        print(f"  {section}: " + ", ".join(f"{n} {tokens / median(t):.0f} tok/s" for n, t in times.items()),
              flush=True)
    return rows, context


def run_gqa(s: Sizes, device: torch.device, *, prompt: int | None = None,
            new: int | None = None) -> tuple[list[Row], dict[str, Any]]:
    """Multi-head vs grouped-query vs multi-query attention at equal width (same n_embd, n_head, layers; only
    c_attn's key/value outputs and the cache shrink): KV-cache bytes allocated for prompt + new positions and
    greedy decode tokens/s (prefill included), per batch size, interleaved rounds. Random weights (std 0.02)."""
    prompt, new = prompt or s.decode_prompt, new or s.decode_new
    kv_heads = sorted({s.n_head, max(1, s.n_head // 2), 1}, reverse=True)
    rows: list[Row] = []
    context: dict[str, Any] = {"prompt": prompt, "new_tokens": new, "n_head": s.n_head, "n_kv_head": kv_heads,
                               "cache_bytes": {}, "tokens_per_s": {}}
    models = {}
    for h in kv_heads:
        torch.manual_seed(0)
        cfg = GPTConfig(vocab_size=s.vocab_size, block_size=prompt + new, n_layer=s.n_layer, n_head=s.n_head,
                        n_embd=s.n_embd, n_kv_head=h, position="rotary")
        models[h] = GPT(cfg).eval().to(device)
    name = lambda h: "mha" if h == s.n_head else ("mqa" if h == 1 else f"gqa n_kv_head={h}")  # noqa: E731
    for b in s.decode_batches:
        section = f"decode gqa batch {b}"
        ids = torch.randint(0, s.vocab_size, (b, prompt), generator=torch.Generator().manual_seed(b)).to(device)
        fns = {name(h): (lambda m=m, ids=ids: generate(m, ids, temperature=0, max_new_tokens=new))
               for h, m in models.items()}
        times = interleaved(fns, s.rounds, device, warmup=1)
        full = name(s.n_head)
        full_bytes = models[s.n_head].new_cache(b, prompt + new).nbytes
        for h, m in models.items():
            nbytes = m.new_cache(b, prompt + new).nbytes
            rate = b * new / median(times[name(h)])
            context["cache_bytes"][f"{section} {name(h)}"] = nbytes
            context["tokens_per_s"][f"{section} {name(h)}"] = rate
            if h != s.n_head:
                rows.append(Row(section, f"{name(h)} vs mha", "tokens/s ratio",
                                ratio_stats(times[full], times[name(h)]),
                                {"tokens/s": rate, "mha tokens/s": b * new / median(times[full]),
                                 "cache MiB": nbytes / 2**20, "mha cache MiB": full_bytes / 2**20}))
        rates = ", ".join(f"{n} {b * new / median(t):.0f} tok/s" for n, t in times.items())
        print(f"  {section}: {rates}", flush=True)
    return rows, context
