"""Per-token decoding time of the shipped checkpoints against the matrix products it needs, before and after.

    PYTHONPATH=. python benchmarks/decode_overhead.py     # writes benchmarks/decode_overhead.json and .md

Issue 25: the shipped checkpoints (<= 2 M parameters) fit in the CPU's cache, so what limits their decoding is the
work around the products, not memory bandwidth. For each checkpoint and batch 1 and 8 this measures

* ms/token: the wall time of one `zoo.sampling.generate` call (prefill included) over the tokens it generates per
  row, with the checkpoint's own sampling defaults (temperature, top_k/top_p) and guidance off;
* matmul-only ms/token: the matrix-product calls of that same call (aten mm, addmm, bmm, baddbmm and the fused
  scaled-dot-product-attention call, which includes its softmax) recorded with their own tensors by a
  `TorchDispatchMode` and replayed back to back, eager: the time of the products alone, with nothing between them
  but their own dispatch; ratio = ms/token / matmul-only ms/token (1 would be all products);
* guided / unguided wall time, for the conditional checkpoints (classifier-free guidance at the checkpoint's
  scale: conditional and unconditional rows in one batched step; issue 25's goal <= 1.3x).

Before / after: the zoo package of git revision `--before` (default: the commit this work started from) is
extracted with `git archive` into a temporary folder; one worker process imports it, another this tree (PYTHONPATH),
both kept alive for the whole run. Each round asks both for every row, one call each, back to back (the order
alternating), after one untimed warm-up call per row. The before / after ratio is taken per round, from calls
made seconds apart, and the median over rounds is reported with its min-max. One thread (OMP_NUM_THREADS=1,
torch.set_num_threads(1)); the machine is shared: its load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "060456d"  # main when issue 25's overhead work started
NAMES = ["gpt-pydoc", "image-gpt-digits", "music-transformer-bach", "music-transformer-jsb",
         "music-transformer-styles", "text2image-digits"]
GUIDED = ["image-gpt-digits", "music-transformer-styles", "text2image-digits"]
COMPILED = ["gpt-pydoc", "music-transformer-bach", "image-gpt-digits", "text2image-digits"]  # 'after' side only
BATCHES = (1, 8)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default=BEFORE, help="git revision whose zoo package is the 'before' side")
    ap.add_argument("--rounds", type=int, default=5, help="rounds: every row once per side in each")
    ap.add_argument("--tokens", type=int, default=96, help="new tokens per row (fewer where the context is shorter)")
    ap.add_argument("--names", nargs="*", default=NAMES, help="registered checkpoint names")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one side's process (stdin protocol)
    return ap


def stem(args: argparse.Namespace) -> str:
    from zoo.bench.common import changed_options, output_stem

    return output_stem("decode_overhead", changed_options(parser(), args, ignore=["out_dir", "worker"]))


# ---- one worker: measures with whichever zoo is on PYTHONPATH ----------------------------------------------------
def _setup(name: str, batch: int, tokens: int) -> tuple[Any, list[list[int]], Any, Any]:
    """The model, prompts, condition and SamplingConfig (guidance off) of one row."""
    import torch

    import zoo
    from zoo.sampling import SamplingConfig

    p = zoo.load(name)
    m = p.model.eval()
    defaults = {k: v for k, v in p.generation.items() if k not in ("guidance", "max_new_tokens")}
    cond = None
    if m.model_type == "gpt":
        prompts = [p.codec.encode("def ")] * batch  # a few tokens of Python
    elif m.model_type == "music_transformer":
        prompts = [[p.codec.bos_id]] * batch
        cond = torch.arange(batch) % m.config.num_classes if m.config.num_classes else None
    elif m.model_type == "image_gpt":
        prompts, cond = [[]] * batch, torch.arange(batch) % m.config.num_classes
    else:  # text2image: a caption in the model's text ids, padded
        prompts, cond = [[]] * batch, m.null_caption(batch)
        cond[:, :3] = torch.tensor([3, 1, 4])
    n = min(tokens, m.max_len - max(len(x) for x in prompts))
    return m, prompts, cond, SamplingConfig(max_new_tokens=n, seed=0, **defaults)


def matmul_seconds(m: Any, prompts: list[list[int]], cond: Any, cfg: Any, repeats: int = 3) -> float:
    """Best-of-`repeats` seconds of replaying one `generate` call's matrix-product calls (module docstring)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from zoo.sampling import generate

    products: list[tuple[Any, tuple, dict]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            kwargs = kwargs or {}
            base = func.overloadpacket.__name__
            if base in ("mm", "addmm", "bmm", "baddbmm") or "scaled_dot_product" in base:
                products.append((func, args, kwargs))  # the tensors themselves: same shapes, strides, memory
            return func(*args, **kwargs)

    with Record():
        generate(m, prompts, cfg, cond=cond)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            for func, args, kwargs in products:
                func(*args, **kwargs)
            best = min(best, time.perf_counter() - t0)
    return best


class Rows:
    """One side's rows, built once: `time(row)` is seconds per generated token (per row) of one call."""

    def __init__(self, tokens: int) -> None:
        import torch

        torch.set_num_threads(1)
        self.tokens, self.built = tokens, {}

    def _get(self, name: str, b: int) -> tuple[Any, list[list[int]], Any, dict[str, Any]]:
        if (name, b) not in self.built:
            import zoo
            from zoo.sampling import generate

            m, prompts, cond, cfg = _setup(name, b, self.tokens)
            runs = {"unguided": cfg}
            if name in GUIDED:
                runs["guided"] = type(cfg)(**(vars(cfg) | {"guidance": zoo.load(name).generation["guidance"]}))
            first = {}
            for kind, c in runs.items():
                t0 = time.perf_counter()
                generate(m, prompts, c, cond=cond)  # warm-up
                first[kind] = time.perf_counter() - t0
            self.built[(name, b)] = (m, prompts, cond, runs, first)
        return self.built[(name, b)]

    def _compiled(self, name: str, b: int) -> None:
        """Add compile=True's config to the row's runs, compiled (its first call timed), when first asked for."""
        from zoo.sampling import generate

        m, prompts, cond, runs, first = self._get(name, b)
        if "compiled" not in runs:
            runs["compiled"] = type(runs["unguided"])(**(vars(runs["unguided"]) | {"compile": True}))
            t0 = time.perf_counter()
            generate(m, prompts, runs["compiled"], cond=cond)
            first["compiled"] = time.perf_counter() - t0

    def time(self, row: str) -> float:
        from zoo.sampling import generate

        name, b, kind = row.split("|")
        if kind in ("compiled", "compile_s"):
            self._compiled(name, int(b))
        m, prompts, cond, runs, first = self._get(name, int(b))
        n = runs["unguided"].max_new_tokens
        if kind == "compile_s":
            return first["compiled"]  # compiling and the first call
        if kind == "matmul":
            return matmul_seconds(m, prompts, cond, runs["unguided"]) / n
        t0 = time.perf_counter()
        generate(m, prompts, runs[kind], cond=cond)
        return (time.perf_counter() - t0) / n


def worker(tokens: int) -> None:
    """Answer row names read from stdin, one per line, with one timing each (a JSON number per line)."""
    rows = Rows(tokens)
    for line in sys.stdin:
        print(json.dumps(rows.time(line.strip())), flush=True)


# ---- the driver --------------------------------------------------------------------------------------------------
class Worker:
    """A worker process of one side (zoo from `tree`), kept alive for the whole run and asked row by row."""

    def __init__(self, tree: Path, tokens: int) -> None:
        env = os.environ | {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--tokens", str(tokens)]
        self.proc = subprocess.Popen(cmd, env=env, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def time(self, row: str) -> float:
        self.proc.stdin.write(row + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker died measuring {row!r} (its error is above)")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _stats(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.worker:
        worker(args.tokens)
        return {}
    from zoo.bench.common import cpu_name, load_average

    load_before, started = load_average(), time.perf_counter()
    plan = [f"{name}|{b}|{kind}" for name in args.names for b in BATCHES
            for kind in (("unguided", "guided") if name in GUIDED else ("unguided",))]
    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "zoo"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        workers = {"before": Worker(old, args.tokens), "after": Worker(ROOT, args.tokens)}
        try:
            for r in range(args.rounds):
                got: dict[str, dict[str, float]] = {"before": {}, "after": {}}
                for i, row in enumerate(plan):  # the two sides back to back per row, the order alternating
                    for side in ("before", "after") if (r + i) % 2 == 0 else ("after", "before"):
                        got[side][row] = workers[side].time(row)
                for name in args.names:
                    for b in BATCHES:
                        for kind in ("matmul", "compiled", "compile_s") if name in COMPILED else ("matmul",):
                            got["after"][f"{name}|{b}|{kind}"] = workers["after"].time(f"{name}|{b}|{kind}")
                rounds.append(got)
                print(f"round {r + 1}/{args.rounds} done", flush=True)
        finally:
            for w in workers.values():
                w.close()
    rows = []
    for name in args.names:
        for b in BATCHES:
            key = f"{name}|{b}"
            before = [x["before"][f"{key}|unguided"] * 1e3 for x in rounds]
            after = [x["after"][f"{key}|unguided"] * 1e3 for x in rounds]
            matmul = [x["after"][f"{key}|matmul"] * 1e3 for x in rounds]
            row = {"name": name, "batch": b, "tokens": _setup_tokens(name, b, args.tokens),
                   "before_ms": statistics.median(before), "after_ms": statistics.median(after),
                   "matmul_ms": statistics.median(matmul),
                   "before_over_after": _stats([x / y for x, y in zip(before, after)]),
                   "after_over_matmul": _stats([x / y for x, y in zip(after, matmul)]),
                   "before_over_matmul": _stats([x / y for x, y in zip(before, matmul)])}
            if name in COMPILED:
                compiled = [x["after"][f"{key}|compiled"] * 1e3 for x in rounds]
                row |= {"compiled_ms": statistics.median(compiled),
                        "after_over_compiled": _stats([x / y for x, y in zip(after, compiled)]),
                        "compiled_over_matmul": _stats([x / y for x, y in zip(compiled, matmul)]),
                        "compile_s": rounds[0]["after"][f"{key}|compile_s"]}
            if name in GUIDED:
                for side in ("before", "after"):
                    ratios = [x[side][f"{key}|guided"] / x[side][f"{key}|unguided"] for x in rounds]
                    row[f"guided_over_unguided_{side}"] = _stats(ratios)
            rows.append(row)
    import torch

    report = {"command": " ".join(["python benchmarks/decode_overhead.py", *(sys.argv[1:] if argv is None else argv)]),
              "cpu": f"{cpu_name()}, {os.cpu_count()} logical CPUs, 1 thread used", "torch": torch.__version__,
              "before": args.before, "after": _head(), "rounds": args.rounds,
              "load_before": load_before, "load_after": load_average(),
              "wall_s": round(time.perf_counter() - started),
              "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "rows": rows}
    out = args.out_dir / stem(args)
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(report))
    print(f"wrote {out}.json and {out}.md")
    return report


def _setup_tokens(name: str, b: int, tokens: int) -> int:
    return _setup(name, b, tokens)[3].max_new_tokens


def _head() -> str:
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "zoo"], capture_output=True, text=True)
    return rev.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def _r(s: dict[str, float]) -> str:
    return f"{s['median']:.2f} [{s['min']:.2f}, {s['max']:.2f}]"


def markdown(r: dict[str, Any]) -> str:
    lines = ["# Decoding overhead of the shipped checkpoints (issue 25)", "",
             f"Command: `{r['command']}`. CPU: {r['cpu']}; torch {r['torch']}; measured {r['measured']}, "
             f"{r['rounds']} rounds, {r['wall_s']} s. Load average (1 min) before / after: {r['load_before']} / "
             f"{r['load_after']} (a shared machine). Before: zoo at {r['before']}; after: zoo at {r['after']}.", "",
             __doc__.split("\n\n", 2)[2].strip(), "",
             "ms/token are medians over rounds (context: they follow the machine's load); the ratios are medians of "
             "per-round ratios [min, max].", "",
             "| checkpoint | batch | tokens | before ms/token | after ms/token | before / after | matmul-only ms/token "
             "| before / matmul | after / matmul |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        lines.append(f"| `{x['name']}` | {x['batch']} | {x['tokens']} | {x['before_ms']:.2f} | {x['after_ms']:.2f} | "
                     f"**{_r(x['before_over_after'])}** | {x['matmul_ms']:.2f} | {_r(x['before_over_matmul'])} | "
                     f"**{_r(x['after_over_matmul'])}** |")
    lines += ["", "## compile=True (after only): the torch.compile'd fixed-shape decode step", "",
              "| checkpoint | batch | compile + first call s | compiled ms/token | eager / compiled "
              "| compiled / matmul |",
              "|---|---:|---:|---:|---:|---:|"]
    for x in r["rows"]:
        if "compiled_ms" in x:
            lines.append(f"| `{x['name']}` | {x['batch']} | {x['compile_s']:.0f} | {x['compiled_ms']:.2f} | "
                         f"**{_r(x['after_over_compiled'])}** | {_r(x['compiled_over_matmul'])} |")
    lines += ["", "## Guidance: guided / unguided wall time (goal <= 1.3x)", "",
              "| checkpoint | batch | before | after |", "|---|---:|---:|---:|"]
    for x in r["rows"]:
        if "guided_over_unguided_after" in x:
            lines.append(f"| `{x['name']}` | {x['batch']} | {_r(x['guided_over_unguided_before'])} | "
                         f"**{_r(x['guided_over_unguided_after'])}** |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
