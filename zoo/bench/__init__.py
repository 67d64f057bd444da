"""zoo-bench: zoo side by side with peer libraries — training, decoding, relative attention, image sampling,
decoding against the memory roofline (benchmarks/decode_roofline.md).

    zoo-bench                      # full suite on CPU (python -m zoo.bench works too)
    zoo-bench --quick              # fewer rounds and sizes: a few minutes
    zoo-bench --only gpt,decode --rounds 9 --out /tmp/bench
    zoo-bench --device cuda        # the same on one GPU, plus GPT-2-124M training MFU (benchmarks/gpu.sh)

Prints one table and writes `<stem>.json` and `.md` into --out (default ./benchmarks), the stem named for the
command (`suite_stem`): `zoo-bench` writes suite_cpu, `zoo-bench --quick` suite_cpu_quick, the example above
suite_cpu_only-gpt-decode_rounds-9, so one command never overwrites another's figures. Method and peers:
zoo/bench/common.py, peers.py and the docstring of each section's module.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zoo.bench import attention, decode, gpt, image, lightning_loop, roofline
from zoo.bench.common import SECTIONS, Row, Sizes, cpu_name, load_average, output_stem, sizes, skip_slow_bf16
from zoo.bench.peers import import_litgpt_model
from zoo.bench.report import goals, table, write

__all__ = ["command_stem", "main", "run_suite", "suite_stem"]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _litgpt_version(module: Any, why: str) -> str:
    if module is None:
        return f"not available ({why})"
    v = _version("litgpt")
    if v != "not installed":
        return v
    root = Path(module.__file__).resolve().parents[1]  # a --target install: read its dist-info
    found = sorted(root.glob("litgpt-*.dist-info"))
    return f"{found[-1].name.removeprefix('litgpt-').removesuffix('.dist-info') if found else '?'} (unpacked at {root})"


def check_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda"):
        raise SystemExit(f"zoo-bench: --device {device!r} is not supported; accepted: cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"zoo-bench: --device cuda, but CUDA is not available here (torch {torch.__version__}, "
                         f"built for CUDA {torch.version.cuda}, torch.cuda.is_available() is False). Run it on a "
                         "machine with an NVIDIA GPU (benchmarks/gpu.sh) or use --device cpu.")
    return torch.device(device)


def machine(device: torch.device) -> dict[str, Any]:
    cpu = f"{cpu_name()}, {os.cpu_count()} logical CPUs"
    name = f"{torch.cuda.get_device_name(device)} (host: {cpu})" if device.type == "cuda" else cpu
    return {"name": name, "threads": torch.get_num_threads(), "device": device.type}


def run_section(name: str, s: Sizes, device: torch.device) -> tuple[list[Row], dict[str, Any]]:
    if name == "gpt":
        rows, ctx = gpt.run(s, device)
        for precision in s.lightning_precisions:
            rows.append(lightning_loop.overhead(s, device, precision))
        if s.gpt2_124m:
            more, ctx2 = lightning_loop.gpt2_124m(device, s.rounds)
            rows += more
            ctx |= ctx2
        return rows, ctx
    if name == "decode":
        return decode.run(s, device)
    if name == "attention":
        return attention.run(s, device)
    if name == "image":
        return image.run(s, device)
    if name == "roofline":
        return roofline.run(s, device)
    raise ValueError(f"unknown section {name!r}; accepted: {', '.join(SECTIONS)}")


def run_suite(*, mode: str = "full", device: str = "cpu", only: tuple[str, ...] = SECTIONS,
              rounds: int | None = None, command: str = "zoo-bench",
              on_section: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the selected sections and return the report (the JSON written to disk), goals included.

    A section that raises is reported as a failed row with the error; the others still run.
    `on_section(report so far)` is called after every section (main writes the files then, so that a run
    cut short by a time limit still leaves its finished sections on disk).
    """
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown or not only:
        raise SystemExit(f"zoo-bench: unknown --only section(s) {unknown or '(none given)'}; "
                         f"accepted: {', '.join(SECTIONS)}")
    dev = check_device(device)
    torch.set_num_threads(1)  # issue 7: on a shared machine more threads make ratios swing 0.4-3x
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass
    s = sizes(mode, dev.type, rounds)
    started, load_before = time.perf_counter(), load_average()
    rows: list[Row] = []
    context: dict[str, Any] = {}
    skipped_bf16 = skip_slow_bf16(s, dev)
    if skipped_bf16:
        print(f"zoo-bench: {skipped_bf16}", flush=True)
        context["plan"] = {"skipped": skipped_bf16}
        if "gpt" in only:
            rows.append(Row("train bf16-mixed", "zoo vs peers, MFU", status="skipped", reason=skipped_bf16))
    report: dict[str, Any] = {}
    for name in dict.fromkeys(only):  # in the order asked for (benchmarks/gpu.sh puts decode, the slowest, last)
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        try:
            more, ctx = run_section(name, s, dev)
        except Exception as e:  # noqa: BLE001 - one broken section must not cost the others
            more, ctx = [Row(name, name, status="failed", reason=f"{type(e).__name__}: {e}")], {}
            print(f"  {name} failed: {type(e).__name__}: {e}", flush=True)
        rows += more
        context[name] = ctx | {"wall_s": round(time.perf_counter() - t0, 1)}
        report = _report(command, dev, mode, only, s, rows, context, load_before, started)
        if on_section is not None:
            on_section(report)
    return report


def _report(command: str, dev: torch.device, mode: str, only: tuple[str, ...], s: Sizes, rows: list[Row],
            context: dict[str, Any], load_before: float | None, started: float) -> dict[str, Any]:
    lit, why = import_litgpt_model() if "gpt" in only else (None, "not used")
    report: dict[str, Any] = {
        "command": command, "machine": machine(dev),
        "versions": {"torch": torch.__version__, "transformers": _version("transformers"),
                     "x-transformers": _version("x-transformers"), "lightning": _version("lightning"),
                     "litgpt": _litgpt_version(lit, why),
                     "python": sys.version.split()[0]},
        "load_before": load_before, "load_after": load_average(), "wall_s": time.perf_counter() - started,
        "config": {"mode": mode, "device": dev.type, "sections": list(dict.fromkeys(only)),
                   "sizes": s.to_dict()},
        "rows": [r.to_dict() for r in rows], "context": context,
    }
    report["goals"] = goals(report)
    return report


def suite_stem(device: str = "cpu", mode: str = "full", only: tuple[str, ...] = SECTIONS,
               rounds: int | None = None) -> str:
    """The file name (no suffix) a zoo-bench command writes: `suite_<device>`, then `_<mode>` unless full,
    `_only-<sections>` unless every section runs (in any order: benchmarks/gpu.sh reorders them) and
    `_rounds-<n>` when --rounds is given."""
    sections = list(dict.fromkeys(only))
    return output_stem(f"suite_{device}", {mode: mode != "full",
                                           "only": None if set(sections) == set(SECTIONS) else sections,
                                           "rounds": rounds})


def main(argv: list[str] | None = None) -> None:
    """The `zoo-bench` console script (its exit status is 0 whether or not every goal is met)."""
    run_command(argv)


def parser() -> argparse.ArgumentParser:
    """`zoo-bench`'s arguments."""
    ap = argparse.ArgumentParser(prog="zoo-bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and smaller sizes (a few minutes on CPU)")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: seconds, meaningless figures
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections from {','.join(SECTIONS)}, run in the order given")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per comparison (preset by mode)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks"),
                    help="folder for the .json/.md, named for the command (suite_cpu, suite_cpu_quick, ...)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    return ap


def _mode_only(args: argparse.Namespace) -> tuple[str, tuple[str, ...]]:
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    return mode, tuple(x.strip() for x in args.only.split(",") if x.strip())


def command_stem(argv: list[str]) -> str:
    """The file name (no suffix) `zoo-bench ARGV` writes (`suite_stem` of its parsed options); runs nothing."""
    args = parser().parse_args(argv)
    mode, only = _mode_only(args)
    return suite_stem(args.device, mode, only, args.rounds)


def run_command(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse `zoo-bench` arguments, run the suite, print the table and goals, write JSON + Markdown."""
    args = parser().parse_args(argv)
    mode, only = _mode_only(args)
    command = " ".join(["zoo-bench", *(sys.argv[1:] if argv is None else argv)])
    stem = suite_stem(args.device, mode, only, args.rounds)
    report = run_suite(mode=mode, device=args.device, only=only, rounds=args.rounds, command=command,
                       on_section=lambda partial: write(partial, args.out, stem))
    print(table(report))
    for g in report["goals"]:
        met = "n/a" if g["met"] is None else ("met" if g["met"] else "NOT met")
        print(f"goal: {g['goal']}: {g['measured']} (target {g['target']}) {met}")
    js, md = write(report, args.out, stem)
    print(f"wrote {js} and {md} in {report['wall_s']:.0f} s")
    return report
