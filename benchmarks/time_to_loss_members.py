"""Time to today's validation loss, every member: the shipped recipe against its `*_fast` recipe (issue 23).

    python benchmarks/time_to_loss_members.py                  # all members -> benchmarks/time_to_loss_members.*
    python benchmarks/time_to_loss_members.py --members image  # one member

For each member, two zoo-train runs at the member's shipped experiment size and data:
  today  `experiment=<shipped>` as it is (AdamW, cosine, GELU, the shipped steps);
  fast   `experiment=<shipped>_fast` (Muon on the hidden matrices, AdamW on the rest, warmup-stable-decay).
Both evaluate the member's validation split every `--eval-every` steps (the same fixed set in both: the whole
split, or `data.max_val_windows=null` where a data module would subsample windows); a run's time is its training
wall time with evaluation, and the checkpoint saves that follow it, excluded. One thread per run
(OMP_NUM_THREADS=1, threads=1), the two runs of a member side by side (`fast` usually ends first; its partner
then has the machine to itself, which favours `today`). A run's time to a loss is its training time at the first
evaluation at or below it; the ratio is fast's time to today's final loss over today's time to it.

The text member's nanoGPT comparison (nanoGPT's README CPU size) is benchmarks/time_to_loss.py; here the text
member is `gpt_pydoc` at its own shipped size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_loss import first_reach, launch, pair, train_with_curve  # noqa: E402

from zoo.bench.common import changed_options, cpu_name, output_stem  # noqa: E402
from zoo.training.optim import resolve_ns_dtype  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 1337
# member: (today's experiment, extra overrides both runs take, evaluation interval)
MEMBERS: dict[str, tuple[str, list[str]]] = {
    "text": ("gpt_pydoc", ["data.max_val_windows=null"]),
    "image": ("image_gpt_digits", []),
    "text2image": ("text2image_digits", []),
    "music": ("music_transformer_jsb", ["data.max_val_windows=null"]),
}
GOAL = 0.5


def overrides(member: str, recipe: str, eval_every: int, run_dir: Path, extra: list[str]) -> list[str]:
    experiment, common = MEMBERS[member]
    name = experiment if recipe == "today" else f"{experiment}_fast"
    return [f"experiment={name}", *common, f"trainer.val_check_interval={eval_every}", "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false", "samples.every_n_steps=0", "samples.num_samples=1",
            "samples.max_new_tokens=8", "checkpoint.every_n_steps=0", "logger=none", "threads=1", "ckpt_path=null",
            f"run_dir={run_dir}", f"seed={SEED}", *extra]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", default=",".join(MEMBERS), help="comma-separated: " + ", ".join(MEMBERS))
    ap.add_argument("--eval-every", type=int, default=50, help="steps between evaluations")
    ap.add_argument("--jsb", type=Path, default=ROOT.parent / "shared" / "data" / "jsb" / "Jsb16thSeparated.json",
                    help="a local JSB Chorales file for the music member (else it is downloaded)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: member:recipe
    ap.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--override", nargs="*", default=[], help=argparse.SUPPRESS)  # internal: extra overrides
    return ap


def member_extra(member: str, args: argparse.Namespace) -> list[str]:
    return [f"data.path={args.jsb}"] if member == "music" and args.jsb.is_file() else []


def main(argv: list[str] | None = None) -> dict:
    ap = parser()
    args = ap.parse_args(argv)
    if args.worker:
        member, recipe = args.worker.split(":")
        ov = overrides(member, recipe, args.eval_every, args.worker_out.parent / args.worker_out.stem,
                       [*member_extra(member, args), *args.override])
        train_with_curve(ov, args.worker_out, recipe)
        return {}
    members = args.members.split(",")
    unknown = [m for m in members if m not in MEMBERS]
    if unknown:
        ap.error(f"unknown member(s) {unknown}; accepted: {', '.join(MEMBERS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="zoo-time-to-loss-members-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = {}
    for member in members:
        procs = {}
        for recipe in ("today", "fast"):
            out = work / f"{member}_{recipe}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{member}:{recipe}", "--worker-out",
                   str(out), "--eval-every", str(args.eval_every), "--jsb", str(args.jsb)]
            procs[recipe] = launch(cmd, ROOT, work / f"{member}_{recipe}.log")
        shared = pair(procs)
        runs = {r: json.loads((work / f"{member}_{r}.json").read_text()) for r in ("today", "fast")}
        today_final = runs["today"]["curve"][-1]
        hit = first_reach(runs["fast"]["curve"], today_final["val_loss"])
        results[member] = {"experiment": MEMBERS[member][0], "runs": runs, "pair": shared,
                           "today_final": today_final, "fast_reached": hit,
                           "step_s": {r: v["curve"][-1]["train_s"] / v["curve"][-1]["step"] for r, v in runs.items()},
                           "ratio": hit and hit["train_s"] / today_final["train_s"]}
        print(json.dumps({member: {"ratio": results[member]["ratio"], "today_final": today_final,
                                   "fast_final": runs["fast"]["curve"][-1]}}), flush=True)
    report = {"command": " ".join(["python benchmarks/time_to_loss_members.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "started": started, "cpu": cpu_name(), "torch": torch.__version__, "threads_per_run": 1,
              "ns_dtype_auto": str(resolve_ns_dtype("auto", torch.device("cpu"))).removeprefix("torch."),
              "goal": GOAL, "members": results}
    out = args.out_dir / output_stem("time_to_loss_members",
                                     changed_options(ap, args, ignore=["work", "out_dir", "worker", "worker_out",
                                                                       "override", "jsb"]))
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(report))
    print(f"wrote {out}.json and {out}.md")
    return report


def markdown(r: dict) -> str:
    lines = ["# Time to today's validation loss, every member: shipped recipe against `*_fast` (issue 23)", "",
             f"Command: `{r['command']}`. CPU: {r['cpu']} (Muon's Newton-Schulz in {r['ns_dtype_auto']}); torch "
             f"{r['torch']}; one thread per run, the two runs of a member side by side; started {r['started']}.", "",
             __doc__.split("\n\n", 2)[2].strip(), "",
             "| member (shipped experiment) | today: steps, final val loss, training s | fast: steps, final val loss, "
             "training s | ms / step today / fast | fast to today's final loss | ratio (goal <= 0.5) |",
             "|---|---|---|---|---|---|"]
    for member, m in r["members"].items():
        t, f = m["today_final"], m["runs"]["fast"]["curve"][-1]
        hit = m["fast_reached"]
        reach = "not reached" if hit is None else f"{hit['train_s']:.1f} s (step {hit['step']})"
        ratio = "-" if m["ratio"] is None else f"{m['ratio']:.2f}x {'(met)' if m['ratio'] <= r['goal'] else '(missed)'}"
        lines.append(f"| {member} (`{m['experiment']}`) | {t['step']}, {t['val_loss']:.4f}, {t['train_s']:.1f} | "
                     f"{f['step']}, {f['val_loss']:.4f}, {f['train_s']:.1f} | {1000 * m['step_s']['today']:.0f} / "
                     f"{1000 * m['step_s']['fast']:.0f} | {reach} | {ratio} |")
    lines += ["", "Validation curves (step: loss) are in the .json beside this file.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
