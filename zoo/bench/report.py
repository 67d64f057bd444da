"""The suite's goals (met / not met, with a reason read off the figures) and its Markdown / JSON writers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from zoo.bench.common import fmt_num, fmt_ratio
from zoo.bench.gpt import MATCHED

GOALS = {"train_vs_peer": 1.03, "mfu_fp32": 0.85, "mfu_bf16": 0.70, "lightning": 1.03, "decode_b1": 1.65,
         "attn_fwd": 1.5, "attn_fwd_bwd": 3.0, "gpu_mfu": 0.50}


def _rows(report: dict, section: str | None = None, status: str = "ok") -> list[dict]:
    return [r for r in report["rows"] if (section is None or r["section"] == section) and r["status"] == status]


def _goal(goal: str, target: str, measured: str, met: bool | None, reason: str) -> dict[str, Any]:
    reason = re.sub(r" +", " ", re.sub(r"\.(?=[A-Z])", ". ", reason)).strip()  # sentences glued by concatenation
    return {"goal": goal, "target": target, "measured": measured, "met": met, "reason": reason}


def _spread_note(r: dict, threshold: float) -> str:
    lo, hi = r["min"], r["max"]
    return ("The round-to-round spread straddles the target: more rounds or a quieter machine would settle it."
            if lo < threshold < hi else "")


def goals(report: dict) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for precision in report["config"]["sizes"]["precisions"]:
        section = f"train {precision}"
        pairs = [r for r in _rows(report, section) if " vs " in r["name"] and r["name"].split(" vs ")[1] in MATCHED]
        if pairs:
            worst = min(pairs, key=lambda r: r["ratio"]["median"])
            x = worst["ratio"]["median"]
            f = worst["figures"]
            reason = (f"Worst matched pair: {worst['name']} at {fmt_ratio(worst['ratio'])} (zoo MFU "
                      f"{f['zoo MFU']:.0%}, peer {f['peer MFU']:.0%}). ")
            if x < GOALS["train_vs_peer"]:
                reason += ("At matched activation both sides run the same matrix products and the same fused ops, so "
                           "their times can only differ by per-op overhead; a 3% lead needs fewer non-matmul passes "
                           "(fused QKV/bias/GELU epilogues, a fused optimizer) than the peer.")
            out.append(_goal(f"training tokens/s vs best matched peer, {precision}", f">= {GOALS['train_vs_peer']}x",
                             f"{x:.2f}x", x >= GOALS["train_vs_peer"], reason + _spread_note(worst["ratio"], 1.03)))
        mfu = [r for r in _rows(report, section) if r["name"] == "zoo MFU"]
        if mfu:
            key = "mfu_fp32" if precision == "fp32" else "mfu_bf16"
            r = mfu[0]
            x = r["ratio"]["median"]
            peers = [p["figures"]["peer MFU"] for p in _rows(report, section) if "peer MFU" in p["figures"]]
            reason = (f"zoo sustains {r['figures']['model TFLOP/s'] * 1e3:.1f} GFLOP/s of model FLOPs against a "
                      f"{r['figures']['peak TFLOP/s'] * 1e3:.1f} GFLOP/s matmul peak"
                      + (f"; the peers reach {min(peers):.0%}-{max(peers):.0%}" if peers else "") + ". ")
            if x < GOALS[key]:
                z = report["config"]["sizes"]
                reason += (f"6N + 12LTd counts matrix products only; at n_embd {z['n_embd']}, T {z['block_size']} and "
                           f"vocab {z['vocab_size']} the rest of the step (layernorms, softmax, GELU, the vocabulary-"
                           "wide cross-entropy, AdamW over every parameter) is a large share on one CPU thread, and "
                           f"products with an inner dimension of {z['n_embd']} run below the square-matrix peak. "
                           "Closing it takes fused kernels (torch.compile, a fused optimizer) or a wider model.")
            out.append(_goal(f"MFU, {precision}", f">= {GOALS[key]:.0%} of the measured matmul peak", f"{x:.0%}",
                             x >= GOALS[key], reason))
        light = [r for r in _rows(report, section) if "Lightning" in r["name"]]
        if light:
            r = light[0]
            x = r["ratio"]["median"]
            reason = (f"Lightning {r['figures']['Lightning tokens/s']:.0f} vs plain "
                      f"{r['figures']['plain tokens/s']:.0f} tokens/s (medians). ")
            if x > GOALS["lightning"]:
                reason += ("Per step Lightning adds hooks, `self.log` of loss / lr / tokens/s (device-to-host syncs) "
                           "and its optimizer closure; fewer logged values per step or a larger step hides it.")
            out.append(_goal(f"Lightning overhead, {precision}", "<= 3%", f"{x - 1:+.1%}", x <= GOALS["lightning"],
                             reason + _spread_note(r["ratio"], GOALS["lightning"])))
    dec = [r for r in _rows(report, "decode batch 1") if r["name"].endswith("vs transformers dynamic cache")]
    if dec:
        best = max(dec, key=lambda r: r["ratio"]["median"])
        x = best["ratio"]["median"]
        reason = (f"{best['name']}: zoo {best['figures']['zoo tokens/s']:.0f} vs transformers "
                  f"{best['figures']['peer tokens/s']:.0f} tokens/s. ")
        if x < GOALS["decode_b1"]:
            reason += ("At batch 1 a step is a few small products plus per-token Python and dispatch overhead on "
                       "both sides; a further 1.65x needs the step compiled or captured (static cache + "
                       "torch.compile / CUDA graphs), not a leaner eager loop.")
        out.append(_goal("decode tokens/s at batch 1 vs transformers default", f">= {GOALS['decode_b1']}x",
                         f"{x:.2f}x", x >= GOALS["decode_b1"], reason + _spread_note(best["ratio"], 1.65)))
    for r in _rows(report):
        if not r["section"].startswith("attention") or "zoo relative vs causal SDPA" not in r["name"]:
            continue
        mode = r["name"].split(":")[0]
        limit = GOALS["attn_fwd"] if mode == "fwd" else GOALS["attn_fwd_bwd"]
        x = r["ratio"]["median"]
        f = r["figures"]
        reason = f"zoo {f['zoo relative ms']:.1f} ms vs SDPA {f['causal SDPA ms']:.1f} ms. "
        if x > limit:
            reason += ("The relative term is a third product as large as Q·Kᵀ (every query against every distance "
                       "up to its position), so exact relative attention needs 1.5x the multiply-adds of causal "
                       "SDPA's two; zoo runs the three products, the add and the softmax as separate calls per query "
                       "block where SDPA's flash kernel fuses its two (at short T per-call overhead adds more). "
                       "Closing it needs a fused kernel computing Q·Erᵀ beside Q·Kᵀ inside the flash loop.")
        out.append(_goal(f"relative attention {mode}, {r['section'].split()[-1]}", f"<= {limit}x causal SDPA",
                         f"{x:.2f}x", x <= limit, reason))
    for r in _rows(report, "train bf16-mixed GPT-2-124M"):
        x = r["ratio"]["median"]
        out.append(_goal(f"GPT-2-124M bf16 compiled training, {r['name'].split(' vs ')[1]}",
                         f">= {GOALS['gpu_mfu']:.0%}", f"{x:.0%}", x >= GOALS["gpu_mfu"],
                         f"{r['figures'].get('model TFLOP/s', float('nan')):.0f} model TFLOP/s"
                         if "model TFLOP/s" in r["figures"] else "against the data-sheet figure"))
    return out


METHOD = """\
Method: one thread (`torch.set_num_threads(1)`); in every comparison the peers run once per round, the order \
reversed every other round, after an untimed warm-up call each; the ratio is taken per round and the table shows \
its median [min, max] over rounds. Absolute figures are medians, context only (they depend on the machine's load; \
see the load averages). Every peer first passes a correctness gate at zoo's weights (same logits within 1e-4 and \
the same greedy tokens); a failed gate stops that row. MFU = (6N + 12·L·T·d FLOPs per token × tokens/s) / the \
FLOP/s of an (n, n) @ (n, n) product in the same precision, timed in the same rounds (N = parameters in matrix \
products: the tied embedding once, position tables excluded)."""


def markdown(report: dict) -> str:
    m, c = report["machine"], report["config"]
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    lines = [f"# zoo-bench ({c['mode']}, {c['device']})", "",
             f"Machine: {m['name']}; {m['threads']} thread used. {versions}. Load average (1 min) before / after: "
             f"{report['load_before']} / {report['load_after']}. Wall time {report['wall_s']:.0f} s. "
             f"Command: `{report['command']}`.", "",
             f"Config: GPT n_layer {c['sizes']['n_layer']}, n_head {c['sizes']['n_head']}, n_embd "
             f"{c['sizes']['n_embd']}, T {c['sizes']['block_size']}, batch {c['sizes']['batch']}, vocab "
             f"{c['sizes']['vocab_size']}; {c['sizes']['rounds']} rounds per comparison.", "", METHOD, "",
             table(report), "", "## Goals", "", "| goal | target | measured | met | reason |", "|---|---|---|---|---|"]
    for g in report["goals"]:
        met = "n/a" if g["met"] is None else ("met" if g["met"] else "**not met**")
        lines.append(f"| {g['goal']} | {g['target']} | {g['measured']} | {met} | {g['reason']} |")
    lines += ["", "## Context", ""]
    for name, ctx in report["context"].items():
        lines.append(f"- {name}: `{json.dumps(ctx, default=str)}`")
    return "\n".join(lines) + "\n"


def table(report: dict) -> str:
    lines = ["| section | comparison | ratio | median [min, max] | figures (medians, context) | note |",
             "|---|---|---|---|---|---|"]
    for r in report["rows"]:
        figs = ", ".join(f"{k} {fmt_num(v)}" for k, v in r["figures"].items())
        note = r["note"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"
        lines.append(f"| {r['section']} | {r['name']} | {r['ratio_label']} | {fmt_ratio(r['ratio'])} | {figs} | "
                     f"{note} |")
    return "\n".join(lines)


def write(report: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md.write_text(markdown(report))
    return js, md
