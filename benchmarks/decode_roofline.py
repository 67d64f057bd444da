"""Decoding at the memory limit (issue 25): the roofline section of zoo-bench, the int8 kernel choice and the
quality of quantised weights, in one run on one thread.

    PYTHONPATH=. python benchmarks/decode_roofline.py [--rounds 3] [--new 32] [--jsb PATH]

1. Kernel choice: the products one decoded token needs at GPT-2-124M's shapes (49 Linears, batch 1), per
   int8 option (torch's `_weight_int8pack_mm` on fp32 and bf16 activations, torchao's Int8WeightOnlyConfig
   when installed, zoo's fused kernel), beside fp32, bf16 and int4; interleaved rounds, median ms.
2. The roofline (zoo.bench.roofline, the `roofline` section of zoo-bench, its docstring has the method):
   bandwidth measured here, bytes per token, achieved / roofline at batch 1 and 8 per precision,
   transformers' static cache + compile beside; each shipped checkpoint's time per token against its products.
3. Quality: validation loss (the card's measure, zoo.hub.export.measure_loss) of every shipped checkpoint in
   fp32, int8 and int4; for GPT-2-shaped weights (random unless GPT-2 is cached) the fp32 model's own samples
   are the text: cross-entropy of each precision on them and the mean KL(fp32 || quantised) per token.

Writes benchmarks/decode_roofline.md and .json (options that differ from the defaults are added to the name;
--jsb and --out-dir, which say where to read and write, are not). The whole run takes about 10 minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zoo.bench import roofline
from zoo.bench.common import Sizes, changed_options, cpu_name, interleaved, median, output_stem
from zoo.bench.report import table
from zoo.core.layers import lay_out_for_decoding
from zoo.core.quant import Int4Linear, Int8Linear, int4_group

ROOT = Path(__file__).resolve().parents[1]
FROZEN_VAL = {"music-transformer-bach": ROOT / "tests" / "data" / "bach_chorales_val.npz",
              "music-transformer-styles": ROOT / "tests" / "data" / "music21_styles_val.npz"}
GPT2_SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)] * 12 + [(768, 50257)]  # (in, out) per token


def kernels(rounds: int) -> dict[str, float]:
    """Median ms of one token's products at GPT-2's shapes, batch 1, per kernel."""
    torch.manual_seed(0)
    lins = [nn.Linear(i, o) for i, o in GPT2_SHAPES]
    x = {i: torch.randn(1, i) for i in (768, 3072)}
    xb = {i: v.bfloat16() for i, v in x.items()}
    fp32 = [(lin.weight.detach().t().contiguous(), lin.bias.detach()) for lin in lins]  # every matrix (in, out)
    zoo_fp32 = lay_out_for_decoding(nn.Sequential(*copy.deepcopy(lins)))  # (in, out) where out >= in
    bf16 = [(lin.weight.detach().bfloat16(), lin.bias.detach().bfloat16()) for lin in lins]
    int8 = [Int8Linear(lin) for lin in lins]
    packed = [(m.q, m.scale, m.bias) for m in int8]
    int4 = [Int4Linear(lin, int4_group(lin.in_features)) for lin in lins]
    fns = {
        "fp32 F.linear, (in, out) storage where out >= in (zoo's fp32 decoding: lay_out_for_decoding)":
            lambda: [m(x[m.in_features]) for m in zoo_fp32],
        "fp32 F.linear, (out, in) storage (nn.Linear's own)": lambda: [m(x[m.in_features]) for m in lins],
        "fp32 x @ W, (in, out) storage for every matrix (Conv1D's, zoo before session 8)":
            lambda: [torch.addmm(b, x[w.shape[0]], w) for w, b in fp32],
        "bf16 F.linear": lambda: [F.linear(xb[w.shape[1]], w, b) for w, b in bf16],
        "int8 torch _weight_int8pack_mm, fp32 activations":
            lambda: [torch.ops.aten._weight_int8pack_mm(x[q.shape[1]], q, s) + b for q, s, b in packed],
        "int8 torch _weight_int8pack_mm, bf16 activations":
            lambda: [torch.ops.aten._weight_int8pack_mm(xb[q.shape[1]], q, s.bfloat16()) + b.bfloat16()
                     for q, s, b in packed],
        "int8 zoo fused (torch.compile'd dequantise-and-reduce)": lambda: [m(x[m.in_features]) for m in int8],
        "int4 torch _weight_int4pack_mm_for_cpu (zoo's int4)": lambda: [m(x[m.in_features]) for m in int4],
    }
    try:
        import torchao.quantization as tq

        for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            model = nn.Sequential(*copy.deepcopy(lins)).to(dtype)
            tq.quantize_(model, tq.Int8WeightOnlyConfig())
            xs = x if dtype == torch.float32 else xb
            fns[f"int8 torchao Int8WeightOnlyConfig, {label} activations"] = (
                lambda model=model, xs=xs: [m(xs[m.in_features]) for m in model])
    except Exception as e:  # noqa: BLE001 - not installed, or its CPU path failed: say so in the table
        print(f"torchao: {type(e).__name__}: {e}", flush=True)
    with torch.no_grad():
        times = interleaved(fns, rounds, "cpu", warmup=2)
    return {n: median(t) * 1e3 for n, t in times.items()}


def frozen_val(m: Any, frozen: Path) -> Any:
    """The checkpoint's data module holding frozen validation pieces (as tests/test_hub.py reads them)."""
    from zoo.training.builders import build_data

    dm = build_data({**m.config["train_config"]["data"], "codec": m.codec})
    with np.load(frozen, allow_pickle=False) as z:
        names, bounds = z["names"].tolist(), z["offsets"]
        notes = [z["notes"][bounds[i]:bounds[i + 1]] for i in range(len(names))]
    dm._loaded = {"train": (names, notes), "val": (names, notes), "test": ([], [])}
    return dm


def quality(jsb: Path) -> dict[str, dict[str, Any]]:
    """Validation loss per shipped checkpoint and scheme (nats/token)."""
    import zoo
    from zoo.hub.export import measure_loss

    out: dict[str, dict[str, Any]] = {}
    for name in [n for n in zoo.list_models() if not n.startswith("gpt2")]:
        row: dict[str, Any] = {}
        for scheme in (None, "int8", "int4"):
            m = zoo.load(name, quantize=scheme)
            if name == "music-transformer-jsb":
                if not jsb.is_file():
                    row["skipped"] = f"needs the JSB Chorales file (--jsb), not found at {jsb}"
                    break
                loss = measure_loss(m, data={"path": str(jsb)})
            elif name in FROZEN_VAL:
                loss = measure_loss(m, datamodule=frozen_val(m, FROZEN_VAL[name]))
            else:
                loss = measure_loss(m)
            row[scheme or "fp32"] = loss
        out[name] = row
        print(f"  quality {name}: {row}", flush=True)
    return out


@torch.no_grad()
def gpt2_quality(s: Sizes) -> dict[str, Any]:
    """On 4 x 128 tokens the fp32 GPT-2-shaped model samples (temperature 1): each precision's cross-entropy and
    its mean KL(fp32 || precision) per token."""
    from zoo.sampling import generate

    _, zoo_model, source = roofline.gpt2_pair(s, torch.device("cpu"))
    models, _ = roofline.variants(zoo_model, torch.device("cpu"))
    prompt = torch.randint(0, zoo_model.config.vocab_size, (4, 1), generator=torch.Generator().manual_seed(0))
    text = torch.tensor(generate(zoo_model, prompt, max_new_tokens=128, temperature=1.0, seed=0))
    ids = torch.cat([prompt, text], dim=1)  # (4, 129)
    ref = zoo_model(ids[:, :-1]).float().log_softmax(-1)
    out: dict[str, Any] = {"weights": source}
    for p, m in models.items():
        logp = m(ids[:, :-1]).float().log_softmax(-1)
        out[p] = {"loss": float(F.nll_loss(logp.flatten(0, 1), ids[:, 1:].flatten())),
                  "kl": float((ref.exp() * (ref - logp)).sum(-1).mean())}
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Decoding at the memory limit: roofline, int8/int4 weights, quality ({report['machine']['cpu']})", "",
             f"`{report['command']}` — {report['machine']['cpu']}, {report['machine']['threads']} thread, torch "
             f"{report['versions']['torch']}, transformers {report['versions']['transformers']}, torchao "
             f"{report['versions']['torchao']}; load average {report['load_before']:.1f} before, "
             f"{report['load_after']:.1f} after; {report['wall_s']:.0f} s. Method: benchmarks/decode_roofline.py and "
             "zoo/bench/roofline.py (docstrings).", ""]
    ctx = report["roofline"]["context"]
    bw = ctx["bandwidth_bytes_per_s"]
    lines += [f"Memory bandwidth, measured in this run (`.sum()` of a 1 GiB float32 tensor, median of 3): "
              f"**{bw['run'] / 1e9:.1f} GB/s at 1 thread** (the roofline uses this one), "
              f"{bw.get('all', float('nan')) / 1e9:.1f} GB/s at {bw.get('all_threads', '?')} threads.",
              f"GPT-2-124M shapes: {ctx['weights']}; prompt {ctx['prompt']} tokens, {ctx['new_tokens']} new, greedy; "
              f"KV bytes at the mean position {ctx['mean_position']:g}. Weight bytes per step: "
              + ", ".join(f"{p} {b / 1e6:.0f} MB" for p, b in ctx["weight_bytes"].items()) + ".", "",
              "First calls (untimed; compilation included): " + "; ".join(
                  f"{sec}: " + ", ".join(f"{n} {t:.1f} s" for n, t in firsts.items())
                  for sec, firsts in ctx["first_call_s"].items()) + ".", "",
              "## Roofline and speed (ratios: median of per-round ratios, [min-max])", "",
              table({"rows": report["roofline"]["rows"]}), "",
              "## Kernel choice: one token's products at GPT-2-124M shapes, batch 1", "",
              "| kernel | ms / token | vs fp32 |", "| --- | ---: | ---: |"]
    ref = next(iter(report["kernels"].values()))
    lines += [f"| {n} | {t:.1f} | {ref / t:.2f}x |" for n, t in report["kernels"].items()]
    lines += ["", "## Quality: validation loss (nats/token), quantised against fp32", "",
              "| checkpoint | fp32 | int8 | int8 vs fp32 | int4 | int4 vs fp32 |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in report["quality"].items():
        if "skipped" in row:
            lines.append(f"| {name} | {row['skipped']} | | | | |")
            continue
        rel = {k: 100 * (row[k] / row["fp32"] - 1) for k in ("int8", "int4")}
        lines.append(f"| {name} | {row['fp32']:.4f} | {row['int8']:.4f} | {rel['int8']:+.2f} % "
                     f"| {row['int4']:.4f} | {rel['int4']:+.2f} % |")
    g = report["gpt2_quality"]
    lines += ["", f"GPT-2-124M shapes ({g['weights']}): loss on 4 x 128 tokens sampled from the fp32 model, and the "
              "mean KL(fp32 || precision) per token:", "", "| precision | loss | vs fp32 | KL (nats) |",
              "| --- | ---: | ---: | ---: |"]
    lines += [f"| {p} | {v['loss']:.4f} | {100 * (v['loss'] / g['fp32']['loss'] - 1):+.2f} % | {v['kl']:.2e} |"
              for p, v in g.items() if p != "weights"]
    lines += ["", "## Goals", ""] + [f"- {line}" for line in report["goals"]]
    return "\n".join(lines) + "\n"


def goals(report: dict[str, Any]) -> list[str]:
    rows = {(r["section"], r["name"]): r for r in report["roofline"]["rows"] if r["status"] == "ok"}
    out = []
    fracs = {n.split(":")[0]: r["ratio"]["median"] for (sec, n), r in rows.items()
             if sec == "roofline batch 1" and n.startswith("zoo") and "roofline" in n}
    if fracs:
        best = max(fracs, key=fracs.get)
        out.append(f"batch-1 decode at >= 70 % of the roofline in its best precision: {best} "
                   f"{100 * fracs[best]:.0f} % ({', '.join(f'{k} {100 * v:.0f} %' for k, v in fracs.items())})")
    hf = {n: r for (sec, n), r in rows.items() if sec == "roofline batch 1" and " vs transformers" in n}
    if hf:
        best = max(hf, key=lambda n: hf[n]["ratio"]["median"])
        out.append(f">= 1.5x transformers static cache + compile at batch 1: {best} "
                   f"{hf[best]['ratio']['median']:.2f}x")
    r = rows.get(("roofline batch 1", "zoo int8 vs zoo fp32"))
    if r:
        out.append(f"int8 >= 1.6x zoo fp32 at batch 1: {r['ratio']['median']:.2f}x")
    within = [n for n, q in report["quality"].items() if "int8" in q and abs(q["int8"] / q["fp32"] - 1) < 0.01]
    out.append(f"int8 validation loss within 1 % of fp32: {len(within)} of {len(report['quality'])} shipped checkpoints"
               + "".join(f" ({n}: {q['skipped']})" for n, q in report["quality"].items() if "skipped" in q))
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per comparison")
    ap.add_argument("--new", type=int, default=32, help="new tokens per decoding call")
    ap.add_argument("--jsb", type=Path, default=ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json",
                    help="the JSB Chorales JSON (music-transformer-jsb's validation data)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks")
    return ap


def stem(args: argparse.Namespace) -> str:
    return output_stem("decode_roofline", changed_options(parser(), args, ignore=["out_dir", "jsb"]))


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(1)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        tf_version = transformers.__version__
    except ImportError:
        tf_version = "not installed"
    try:
        import torchao

        ao_version = torchao.__version__
    except ImportError:
        ao_version = "not installed"
    s = Sizes(rounds=args.rounds, roofline_new=args.new)
    print("[kernels]", flush=True)
    kern = kernels(args.rounds)
    print("[roofline]", flush=True)
    rows, ctx = roofline.run(s, torch.device("cpu"))
    print("[quality]", flush=True)
    qual, g2 = quality(args.jsb), gpt2_quality(s)
    report: dict[str, Any] = {
        "command": "PYTHONPATH=. python benchmarks/decode_roofline.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                    "native_bf16": roofline.native_bf16(torch.device("cpu"))},
        "versions": {"torch": torch.__version__, "transformers": tf_version, "torchao": ao_version},
        "config": s.to_dict(), "kernels": kern, "roofline": {"rows": [r.to_dict() for r in rows], "context": ctx},
        "quality": qual, "gpt2_quality": g2, "load_before": load_before, "load_after": os.getloadavg()[0],
        "wall_s": time.perf_counter() - started,
    }
    report["goals"] = goals(report)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = stem(args)
    (args.out_dir / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out_dir / f"{name}.md").write_text(markdown(report))
    print("\n".join(report["goals"]))
    print(f"wrote {args.out_dir / f'{name}.json'} and .md in {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
