"""zoo's GPT vs Hugging Face `transformers`' GPT2LMHeadModel on CPU: training and KV-cache decoding.

    PYTHONPATH=. python benchmarks/gpt_cpu.py [--quick] [--vocab V] [--rounds N] [--out-dir DIR]

Issue 2. One config for both: n_layer 4, n_head 4, n_embd 256, block 256, vocab 8192 by default
(a realistic small BPE vocabulary; `--vocab 50257` gives GPT-2's, where the LM head then takes most
of the time on both sides), float32, dropout 0, tied embeddings.

Peers, at the SAME weights (a random HF model is built, its state dict imported into zoo with
`zoo.models.gpt2_weights.load_hf_state_dict`, and the run stops unless both give the same logits and the same first
training loss):
- training, two pairs: zoo `activation="gelu_tanh"` vs HF `activation_function="gelu_new"` (the
  same function: GPT-2's tanh approximation), and zoo `"gelu"` vs HF `"gelu"` (exact erf GELU).
  One step = forward on (8, 256) tokens, cross-entropy over all positions (the same
  `F.cross_entropy` call on both sides), backward, `torch.optim.AdamW` step (default foreach
  implementation, lr 3e-4), `zero_grad`. HF is called with `use_cache=False`, its best training
  setting, and its default attention implementation (sdpa).
- decoding (issue 7), the gelu_tanh/gelu_new pair with 272 positions: greedy, batch 1 and 8, a 16-token
  prompt per row, 256 new tokens, with the KV cache: `zoo.sampling.generate(temperature=0)` (default, and
  with `compile=True`, the opt-in compiled fixed-shape step, compiled in an untimed warm-up) vs HF
  `model.generate(do_sample=False, max_new_tokens=256, min_new_tokens=256)` (its default dynamic cache).
  All must produce the same 256 tokens per row. tokens/s = B · 256 / wall time of the whole
  call (prefill included).

Method: `torch.set_num_threads(1)`; one untimed warm-up per peer; then rounds in which every peer
runs once (one training step, or one whole generate call), interleaved, the order alternating each
round, so that both see the same machine load; the ratio zoo / HF of tokens/s is taken per round,
and the median over rounds is reported with its min-max spread. tokens/s is counted per wall-clock
second (the goal) and, as a cross-check that is robust to being descheduled on a shared machine, per
CPU-second of the process (`time.process_time`; with one thread, all work runs on the calling
thread). Absolute tokens/s (median) are context only: they depend on the machine and its load (the
load average before and after the run is recorded).

Writes gpt_cpu.json and gpt_cpu.md into --out-dir (default: next to this file); other options name their own
files (`--quick`: gpt_cpu_quick.*; zoo.bench.common.output_stem).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor

from zoo.bench.common import changed_options, cpu_name, output_stem
from zoo.models.gpt import GPT
from zoo.models.gpt2_weights import gpt_config_from_hf, load_hf_state_dict
from zoo.sampling import generate

ARCH = dict(n_layer=4, n_head=4, n_embd=256, n_positions=256)
BATCH, PROMPT, NEW_TOKENS, LR = 8, 16, 256, 3e-4
DECODE_BATCHES = (1, 8)
PAIRS = {"gelu_tanh": "gelu_new", "gelu": "gelu"}  # zoo activation -> HF activation_function
# zoo / HF tokens/s, at least: issue 2 (training at GPT-2's activation), issue 7 (decoding, batch 1, default
# generate and the opt-in compiled step); the other rows are context.
GOALS = {"zoo_gelu_tanh_vs_hf_gelu_new": 1.0, "zoo_generate_vs_hf_generate_b1": 1.65,
         "zoo_compiled_vs_hf_generate_b1": 1.65}


def hf_model(vocab: int, activation: str, seed: int, std: float = 0.02,
             n_positions: int = ARCH["n_positions"]) -> transformers.GPT2LMHeadModel:
    cfg = transformers.GPT2Config(**(ARCH | {"n_positions": n_positions}), vocab_size=vocab,
                                  activation_function=activation, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
                                  pad_token_id=0, initializer_range=std)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(cfg)


def zoo_twin(hf: transformers.GPT2LMHeadModel) -> GPT:
    model = GPT(gpt_config_from_hf(hf.config.to_dict()))
    load_hf_state_dict(model, hf.state_dict())
    return model


def check_same_model(zoo: GPT, hf: transformers.GPT2LMHeadModel, batch: tuple[Tensor, Tensor]) -> dict:
    """Correctness gate: same logits (eval) and same first training loss. Stops the run otherwise."""
    x, y = batch
    zoo.eval(), hf.eval()
    with torch.no_grad():
        a, b = zoo(x[:2]), hf(x[:2], use_cache=False).logits
    diff = (a - b).abs().max().item()
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda m: f"zoo and HF logits differ: {m}")
    zoo.train(), hf.train()
    with torch.no_grad():
        la = F.cross_entropy(zoo(x).flatten(0, 1), y.flatten()).item()
        lb = F.cross_entropy(hf(x, use_cache=False).logits.flatten(0, 1), y.flatten()).item()
    if abs(la - lb) > 1e-4:
        raise SystemExit(f"first training loss differs: zoo {la:.6f}, HF {lb:.6f}")
    return {"max_abs_logit_diff": diff, "loss_zoo": la, "loss_hf": lb}


Sample = tuple[int, float, float]  # (tokens, wall seconds, process CPU seconds) of one timed call


def measured(fn: Callable[[], int]) -> Sample:
    wall, cpu = time.perf_counter(), time.process_time()
    n = fn()
    return n, time.perf_counter() - wall, time.process_time() - cpu


class TrainPeer:
    def __init__(self, model: torch.nn.Module, forward: Callable[[Tensor], Tensor], batch: tuple[Tensor, Tensor]):
        self.model, self.forward, (self.x, self.y) = model, forward, batch
        self.opt = torch.optim.AdamW(model.parameters(), lr=LR)
        model.train()

    def step(self) -> int:
        logits = self.forward(self.x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), self.y.flatten())
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return self.x.numel()


def interleaved(peers: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[Sample]]:
    """Run every peer once per round, the order reversed every other round; one sample per round."""
    names = list(peers)
    out: dict[str, list[Sample]] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(measured(peers[n]))
    return out


def summarise(samples: dict[str, list[Sample]], zoo: str, hf: str) -> dict:
    """Median tokens/s and the median (min, max) of per-round ratios zoo / HF, on both clocks."""
    out: dict = {}
    for clock, i in (("", 1), ("cpu_", 2)):
        rate = {p: [s[0] / s[i] for s in samples[p]] for p in (zoo, hf)}
        ratios = [a / b for a, b in zip(rate[zoo], rate[hf])]
        out |= {f"zoo_{clock}tokens_per_s": statistics.median(rate[zoo]),
                f"hf_{clock}tokens_per_s": statistics.median(rate[hf]),
                f"{clock}ratio_median": statistics.median(ratios), f"{clock}ratio_min": min(ratios),
                f"{clock}ratio_max": max(ratios), f"{clock}per_round": {zoo: rate[zoo], hf: rate[hf], "ratio": ratios}}
    return out


def bench_training(vocab: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (BATCH, ARCH["n_positions"] + 1), generator=g)
    batch = (tokens[:, :-1], tokens[:, 1:])
    peers, gates = {}, {}
    for zoo_act, hf_act in PAIRS.items():
        hf = hf_model(vocab, hf_act, seed=1)
        zoo = zoo_twin(hf)
        gates[zoo_act] = check_same_model(zoo, hf, batch)
        peers[f"zoo_{zoo_act}"] = TrainPeer(zoo, zoo, batch)
        peers[f"hf_{hf_act}"] = TrainPeer(hf, lambda x, hf=hf: hf(x, use_cache=False).logits, batch)
    for p in peers.values():
        p.step()  # warm-up: optimizer state, allocator, lazy init
    samples = interleaved({n: p.step for n, p in peers.items()}, rounds)  # one training step per peer and round
    out = {}
    for zoo_act, hf_act in PAIRS.items():
        out[f"zoo_{zoo_act}_vs_hf_{hf_act}"] = summarise(samples, f"zoo_{zoo_act}", f"hf_{hf_act}") | {
            "gate": gates[zoo_act]}
    return out


def bench_decoding(vocab: int, rounds: int, batch: int) -> dict:
    # std 0.1 instead of GPT-2's 0.02: at 0.02 the random model's greedy output cycles through 4 tokens,
    # which would make the same-tokens check weak; at 0.1 it has ~120 distinct tokens. Speed is unaffected.
    # The decoding models hold exactly prompt + new tokens (272 positions), so that 256 new tokens fit.
    hf = hf_model(vocab, "gelu_new", seed=2, std=0.1, n_positions=PROMPT + NEW_TOKENS).eval()
    zoo = zoo_twin(hf).eval()
    prompt = torch.randint(0, vocab, (batch, PROMPT), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(prompt)

    def run_zoo(compile: bool = False) -> list[list[int]]:
        return generate(zoo, prompt, temperature=0, max_new_tokens=NEW_TOKENS, compile=compile)

    def run_hf() -> list[list[int]]:
        with torch.no_grad():
            out = hf.generate(prompt, attention_mask=mask, do_sample=False, max_new_tokens=NEW_TOKENS,
                              min_new_tokens=NEW_TOKENS)
        return out[:, PROMPT:].tolist()

    started = time.perf_counter()
    c = run_zoo(compile=True)  # warm-up: compiles the fixed-shape step for this batch size and cache length
    compile_s = time.perf_counter() - started
    a, b = run_zoo(), run_hf()  # warm-up and the token checks
    for name, got in (("zoo", a), ("zoo compiled", c)):
        if got != b:
            row = next(r for r in range(batch) if got[r] != b[r])
            raise SystemExit(f"greedy tokens differ in row {row}: {name} {got[row][:10]}..., HF {b[row][:10]}...")
    n = batch * NEW_TOKENS
    samples = interleaved({"zoo": lambda: len(run_zoo()) and n, "zoo_compiled": lambda: len(run_zoo(True)) and n,
                           "hf": lambda: len(run_hf()) and n}, rounds)
    gate = {"same_greedy_tokens": True, "n_tokens": n, "distinct_tokens": len({t for r in a for t in r})}
    return {f"zoo_generate_vs_hf_generate_b{batch}": summarise(samples, "zoo", "hf") | {"gate": gate},
            f"zoo_compiled_vs_hf_generate_b{batch}": summarise(samples, "zoo_compiled", "hf") | {
                "gate": gate | {"compile_and_first_call_s": round(compile_s, 1)}}}


def machine() -> dict:
    cpu = cpu_name()
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def markdown(report: dict) -> str:
    m, c = report["machine"], report["config"]
    lines = [
        "# zoo GPT vs transformers GPT2LMHeadModel, CPU",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['threads']} thread used; "
        f"torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}. "
        f"Load average (1 min) before / after: {report['load_before']:.2f} / {report['load_after']:.2f}.",
        "",
        f"Config (both): n_layer {c['n_layer']}, n_head {c['n_head']}, n_embd {c['n_embd']}, block "
        f"{c['block_size']}, vocab {c['vocab_size']}, float32, dropout 0, tied embeddings, same weights. "
        f"Training: batch {c['batch']} x {c['block_size']} tokens, AdamW, {c['rounds_train']} rounds of one step "
        f"per peer. Decoding: greedy, batch 1 and 8, prompt {c['prompt']}, {c['new_tokens']} new tokens, KV "
        f"cache, block {c['prompt'] + c['new_tokens']}, rounds of one generate call per peer: "
        f"{c['rounds_decode']}; zoo compiled = `generate(..., compile=True)`, compiled in an untimed warm-up.",
        "",
        "tokens/s per wall-clock second (what a user waits for); in brackets the same per CPU-second of the "
        "process, which leaves out time the process spent descheduled on a shared machine.",
        "",
        "| measurement | zoo tokens/s | HF tokens/s | zoo / HF median (min - max) | zoo / HF, CPU time | goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, r in report["results"].items():
        target = GOALS.get(name)
        met = "met" if target is not None and r["ratio_median"] >= target else "NOT met"
        goal = f">= {target}: {met}" if target is not None else "context"
        lines.append(
            f"| {name} | {r['zoo_tokens_per_s']:.0f} ({r['zoo_cpu_tokens_per_s']:.0f}) | "
            f"{r['hf_tokens_per_s']:.0f} ({r['hf_cpu_tokens_per_s']:.0f}) | "
            f"**{r['ratio_median']:.2f}** ({r['ratio_min']:.2f} - {r['ratio_max']:.2f}) | "
            f"{r['cpu_ratio_median']:.2f} ({r['cpu_ratio_min']:.2f} - {r['cpu_ratio_max']:.2f}) | {goal} |")
    gates = {k: v["gate"] for k, v in report["results"].items()}
    lines += ["", "Correctness gates (the run stops if one fails): " + "; ".join(
        f"{k}: " + ", ".join(f"{gk} {gv:.3g}" if isinstance(gv, float) else f"{gk} {gv}" for gk, gv in g.items())
        for k, g in gates.items()) + ".", "",
        "Method: peers interleaved round by round (order alternating), one untimed warm-up each; the median "
        "of per-round ratios zoo / HF with its min - max; absolute figures are medians, context only. "
        "See the docstring of benchmarks/gpt_cpu.py.", "",
        "Where the differences come from (torch.profiler, when this benchmark was written: torch 2.14.1, "
        "transformers 5.24.0, this machine): training runs the same matrix products on both sides; zoo's edge "
        "at GPT-2's activation is `F.gelu(approximate='tanh')`, one fused op, where HF's `gelu_new` is five "
        "elementwise ops (and their saved activations); with exact GELU both run the same ops, hence ~1.0. "
        "In decoding the one-row matrix products dominate on both sides. On this CPU (MKL) x @ W runs about "
        "twice as fast with W stored (in, out), HF's Conv1D layout, as with nn.Linear's (out, in): "
        "`zoo.sampling.generate` therefore multiplies by (in, out) copies of every Linear weight while it "
        "decodes on CPU (`zoo.core.layers.linear_weights_in_out`; parameters and checkpoints unchanged), the LM "
        "head included (HF's stays (out, in)). Around the products zoo spends less per token: a "
        "preallocated KV cache written in place, where HF's DynamicCache concatenates every layer every "
        "step, no per-step mask construction or logits-processor chain, no no-op dropout calls. "
        "`compile=True` (a torch.compile'd fixed-shape step over a masked, preallocated cache, on the same "
        "(in, out) weights) gains little over the default here: the products, most of each token, do not "
        "get faster; it saves the Python dispatch around them but pays the compiled call's guard checks "
        "and attends over the whole masked cache.", "",
        f"Rerun (needs `transformers`, in the test extra): `{report['command']}`", ""]
    return "\n".join(lines)


def report_line(kind: str, name: str, r: dict) -> str:
    return (f"{kind} {name}: zoo/HF {r['ratio_median']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}), "
            f"CPU time {r['cpu_ratio_median']:.2f}; zoo {r['zoo_tokens_per_s']:.0f} tok/s, "
            f"HF {r['hf_tokens_per_s']:.0f} tok/s")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (about a minute and a half)")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--rounds", type=int, default=None,
                    help="training rounds (default 15, 4 with --quick); decoding gets one round less")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    return ap


def stem(args: argparse.Namespace) -> str:
    """The output name (no suffix): gpt_cpu, then each option that differs from its default (not --out-dir)."""
    return output_stem("gpt_cpu", changed_options(parser(), args, ignore=["out_dir"]))


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    rounds = args.rounds or (4 if args.quick else 15)
    load_before = os.getloadavg()[0]
    results = bench_training(args.vocab, rounds)
    for k, v in results.items():
        print(report_line("train", k, v), flush=True)
    decode_rounds = {1: max(3, rounds - 1), 8: max(3, rounds // 2)}  # batch 8 takes ~3x as long per round
    for batch in DECODE_BATCHES:
        decoding = bench_decoding(args.vocab, decode_rounds[batch], batch)
        for k, v in decoding.items():
            print(report_line("decode", k, v), flush=True)
        results |= decoding
    report = {
        "command": "PYTHONPATH=. python benchmarks/gpt_cpu.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "machine": machine(), "load_before": load_before, "load_after": os.getloadavg()[0],
        "config": {"n_layer": ARCH["n_layer"], "n_head": ARCH["n_head"], "n_embd": ARCH["n_embd"],
                   "block_size": ARCH["n_positions"], "vocab_size": args.vocab, "batch": BATCH, "prompt": PROMPT,
                   "new_tokens": NEW_TOKENS, "rounds_train": rounds,
                   "rounds_decode": {f"b{b}": n for b, n in decode_rounds.items()}},
        "goals": GOALS,
        "results": results,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = stem(args)
    (args.out_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / f"{name}.md").write_text(markdown(report))
    print(f"wrote {args.out_dir / f'{name}.json'} and {args.out_dir / f'{name}.md'}")


if __name__ == "__main__":
    main()
