"""Streaming shards (issue 17): prepare >= 1 GB of text, stream through all of it with bounded memory,
and compare the loader's tokens/s with the training step's.

    PYTHONPATH=. python benchmarks/streaming.py [--gb 1.0] [--workers 2] [--time-limit 360] [--out FILE.md]

Writes benchmarks/streaming.md; options that differ from their defaults are added to the name (--gb 0.03:
streaming_gb-0.03.md; `stem`, issue 22). The committed run streamed 1 GB in 208 s, within the 360-s cap.

1. Generates `--gb` GB of text in a temporary folder (16 files of Python's pydoc topics and standard
   library sources, paragraphs shuffled with a different seed per file), deleted at the end.
2. `prepare_corpus(codec="byte", num_workers=--workers)`: wall time and MB/s.
3. In a fresh process (so that nothing of steps 1-2 counts): `StreamingTextDataModule` (block 128,
   batch 32, the default GPT's) streams every training window once, with a trivial step (a sum over
   the batch); resident memory (VmRSS) is read every 200 batches; growth = peak - RSS after the first
   batch. Loader tokens/s = tokens in all batches / wall time.
4. The default small GPT (conf/model/gpt.yaml: 4 layers, 4 heads, width 192, block 128; byte vocab)
   trains for a few steps on batches of the same shape (forward, backward, AdamW): its tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def generate(folder: Path, total_bytes: int, n_files: int = 16) -> int:
    from pydoc_data.topics import topics

    paragraphs = [p for t in topics.values() for p in t.split("\n\n") if p.strip()]
    root = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted(root.glob("*.py"))[:200]:
        paragraphs += [p for p in f.read_text(errors="replace").split("\n\n") if p.strip()]
    per_file, written = total_bytes // n_files + 1, 0
    for i in range(n_files):
        rng = random.Random(i)
        with open(folder / f"part{i:02d}.txt", "w") as out:
            size = 0
            while size < per_file:
                rng.shuffle(paragraphs)
                block = "\n\n".join(paragraphs) + "\n\n"
                out.write(block)
                size += len(block.encode())
        written += (folder / f"part{i:02d}.txt").stat().st_size
    return written


def stream(prepared: str, time_limit: float) -> dict:
    """Step 3, run in a child process."""
    import torch

    from zoo.data.streaming import StreamingTextDataModule

    torch.set_num_threads(1)
    dm = StreamingTextDataModule(prepared, block_size=128, batch_size=32, max_val_windows=4)
    dm.setup()
    loader = dm.train_dataloader()
    it = iter(loader)
    first = next(it)
    base = rss_mb()
    peak, tokens, batches, total = base, first["idx"].numel(), 1, len(loader)
    start = time.perf_counter()
    checksum = 0
    for batch in it:
        checksum += int(batch["idx"][:, 0].sum())  # the trivial step
        tokens += batch["idx"].numel()
        batches += 1
        if batches % 200 == 0:
            peak = max(peak, rss_mb())
            if time.perf_counter() - start > time_limit:
                break
    seconds = time.perf_counter() - start
    peak = max(peak, rss_mb())
    return {"batches": batches, "of_batches": total, "tokens": tokens, "seconds": seconds,
            "loader_tokens_per_s": tokens / seconds, "rss_after_first_batch_mb": base, "rss_peak_mb": peak,
            "rss_growth_mb": peak - base, "vm_hwm_mb": rss_mb("VmHWM"), "checksum": checksum}


def train_speed(steps: int = 6, threads: int = 2) -> dict:
    import torch

    from zoo.models.base import build_model

    torch.set_num_threads(threads)
    model = build_model("gpt", {"vocab_size": 257, "block_size": 128, "n_layer": 4, "n_head": 4, "n_embd": 192,
                                "dropout": 0.0})
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    x = torch.randint(0, 257, (32, 129))
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    step = sorted(times[1:])[len(times[1:]) // 2]  # median, warm-up dropped
    return {"threads": threads, "step_s": step, "train_tokens_per_s": 32 * 128 / step}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=360.0, help="seconds of streaming at most")
    ap.add_argument("--out", default=None, help="the .md to write; default: benchmarks/<stem>.md (`stem`)")
    ap.add_argument("--stream-only", default=None, help=argparse.SUPPRESS)
    return ap


def stem(args: argparse.Namespace) -> str:
    """The output name (no suffix) without --out: streaming, then each option that differs from its default
    (--time-limit included: a run it cuts short streams less; --stream-only is the child's mode, no file)."""
    from zoo.bench.common import changed_options, output_stem  # not at the top: the streaming child measures RSS

    return output_stem("streaming", changed_options(parser(), args, ignore=["out", "stream_only"]))


def main() -> None:
    args = parser().parse_args()
    if args.stream_only:
        print(json.dumps(stream(args.stream_only, args.time_limit)))
        return

    from zoo.data.streaming import prepare_corpus

    work = Path(tempfile.mkdtemp(prefix="zoo-stream-bench-"))
    try:
        (work / "text").mkdir()
        t = time.perf_counter()
        n_bytes = generate(work / "text", int(args.gb * 1e9))
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        manifest = prepare_corpus(str(work / "text"), str(work / "prep"), codec="byte", num_workers=args.workers,
                                  hash_inputs=True)
        prep_s = time.perf_counter() - t
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                          os.environ.get("PYTHONPATH")]))}
        child = subprocess.run([sys.executable, __file__, "--stream-only", str(work / "prep"), "--time-limit",
                                str(args.time_limit)], capture_output=True, text=True, env=env, check=True)
        streamed = json.loads(child.stdout.strip().splitlines()[-1])
        training = train_speed()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"cpu": cpu_name(), "cores": os.cpu_count(), "text_bytes": n_bytes, "generate_s": gen_s,
              "prepare_s": prep_s, "prepare_mb_per_s": n_bytes / prep_s / 1e6, "workers": args.workers,
              "train_tokens": manifest["train_tokens"], "val_tokens": manifest["val_tokens"], **streamed,
              **training}
    print(json.dumps(result, indent=2))
    covered = streamed["batches"] / streamed["of_batches"]
    gb, tps, train = n_bytes / 1e9, streamed["loader_tokens_per_s"], training["train_tokens_per_s"]
    rows = [
        ("text generated", f"{gb:.2f} GB in 16 files ({gen_s:.0f} s)"),
        (f"`zoo-prepare` (byte codec, {args.workers} worker processes, sha256 of inputs)",
         f"{prep_s:.0f} s, {result['prepare_mb_per_s']:.1f} MB/s"),
        ("tokens written", f"{manifest['train_tokens']:,} training + {manifest['val_tokens']:,} validation (uint16)"),
        ("streamed (block 128, batch 32, 1 loader process, 1 thread)",
         f"{streamed['batches']:,} of {streamed['of_batches']:,} batches ({covered:.0%}), "
         f"{streamed['tokens']:,} tokens in {streamed['seconds']:.0f} s"),
        ("**loader tokens/s**", f"**{tps:,.0f}**"),
        (f"default GPT training step (4 layers, width 192, block 128, batch 32, fp32, {training['threads']} threads)",
         f"{training['step_s'] * 1000:.0f} ms/step, **{train:,.0f} tokens/s**"),
        ("loader / training", f"{tps / train:.0f}x"),
        ("RSS after the first batch", f"{streamed['rss_after_first_batch_mb']:.0f} MB"),
        ("peak RSS while streaming (sampled every 200 batches)", f"{streamed['rss_peak_mb']:.0f} MB"),
        ("**RSS growth** (goal < 200 MB)", f"**{streamed['rss_growth_mb']:.0f} MB**"),
    ]
    command = (f"PYTHONPATH=. python benchmarks/streaming.py --gb {args.gb} --workers {args.workers} "
               f"--time-limit {args.time_limit:g}")
    md = "\n".join([
        "# Streaming shards: preparation, bounded memory, loader vs training throughput", "",
        f"Command: `{command}`  ",
        f"Machine: {result['cpu']}, {result['cores']} cores visible, shared with other jobs.", "",
        "| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), "",
        "The loader runs in one process with one thread here; `data.num_workers=N` adds loader processes",
        "(chunks are split between them). A GPU trains far faster than this CPU: the loader figure is what",
        "a GPU run would have to stay under, per rank.", ""])
    Path(args.out or Path(__file__).with_name(f"{stem(args)}.md")).write_text(md)


if __name__ == "__main__":
    main()
