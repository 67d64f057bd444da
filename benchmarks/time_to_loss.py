"""Time to a validation loss: nanoGPT's own train.py, zoo's current recipe and `experiment=gpt_pydoc_fast`.

    python benchmarks/time_to_loss.py     # writes benchmarks/time_to_loss.json and benchmarks/time_to_loss.md

All three train a character GPT at nanoGPT's README CPU settings (4 layers, 4 heads, 128 wide, block 64,
batch 12, 2,000 iterations, dropout 0; lr 1e-3, warmup 100, cosine to 1e-4 at 2,000, beta2 0.99 from
config/train_shakespeare_char.py) on the same characters: zoo's `data=pydoc` (char codec, last 10 % for
validation), whose token ids are written here in nanoGPT's format (train.bin / val.bin uint16, meta.pkl).

  nanogpt  nanoGPT's train.py from an unpacked copy of its repository, `--device=cpu --compile=False`; its
           training time is the sum of its logged per-iteration times, the two iterations that ran its own
           evaluation (0 and 2,000) counted at the median iteration time; its final checkpoint (2,000 updates)
           is scored with nanoGPT's own GPT class.
  today    zoo-train's run() with zoo's shipped recipe: AdamW, cosine, GELU, nanoGPT's lr / warmup / betas.
  fast     zoo-train's run() with `experiment=gpt_pydoc_fast` at the same size, batch 16 (Muon's step costs the
           same whatever the batch, so a larger one spreads it over more tokens) and warmup 20; its schedule
           (warmup, stable, decay) ends where it is meant to reach the loss it is timed to: 400 steps beside
           nanoGPT (to nanoGPT's final loss), 500 beside `today` (to today's lower final loss).

Every loss is nats per character on one FIXED validation set: all disjoint 64-character windows of the
validation split (zoo's `data.max_val_windows=null`), the same windows for every run. zoo runs evaluate it
every `--eval-every` steps; their time is the training wall time with evaluation (and the checkpoint saves that
follow it) excluded. One thread per run (OMP_NUM_THREADS=1, threads=1), two runs at a time: `fast` runs once
beside nanoGPT and once beside `today`, and each ratio is taken between the two runs that shared the machine.
`fast` ends first; its partner then has the machine to itself, which favours the partner.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zoo.bench.common import changed_options, cpu_name, load_average, output_stem
from zoo.training.optim import resolve_ns_dtype

ROOT = Path(__file__).resolve().parents[1]
NANOGPT_REPO = Path("/work/.mirror/karpathy+nanoGPT/repo")
SIZE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
BATCH = 12
LR, WARMUP, MIN_LR, BETA2 = 1e-3, 100, 1e-4, 0.99
SEED = 1337
FAST_BATCH = 16  # sequences of 64 characters (nanoGPT's 12: probes M, O, R below)
FAST_STEPS = 400  # the fast run beside nanoGPT: its schedule (warmup, stable, decay) ends at nanoGPT's loss
FAST_STEPS_TODAY = 500  # the fast run beside today: today's final loss is lower, so its schedule is longer
FAST_WARMUP = 20  # gpt_pydoc_fast's 50 warmup steps are an eighth of a 400-step run (probes P-S below)


PROBES = """
Short probes at this size and batch (seed 1337), each a zoo run evaluated on the fixed set every 50 steps, against
nanoGPT's final loss from a first run of the same nanoGPT command (1.4307). Losses are deterministic; the probes ran
beside a test suite, so their times were not used. Start: optim=muon (Newton-Schulz in bf16, 5 steps), AdamW side
(module.lr) 3e-3 = 3x nanoGPT's rate, module.schedule=wsd with decay_fraction 0.3, warmup 50.

| probe | steps | loss at 500 / 550 / 600 / 650 / 700 | what it decided |
|---|---|---|---|
| A: qk_norm, relu2, zero_init_proj; Muon 0.02 | 700 | 1.561 / 1.511 / 1.460 / 1.418 / 1.379 | target at 650 |
| B: A with Muon lr 0.04 | 700 | 1.570 / 1.527 / 1.479 / 1.428 / 1.399 | Muon lr 0.02 kept |
| C: A, 500 steps | 500 | 1.471 | too short with the switches |
| D: C, decay_fraction 0.4 | 500 | 1.469 | |
| E: A, switches off (GELU, normal init) | 700 | 1.560 / 1.484 / 1.438 / 1.386 / 1.357 | switches off |
| F: A, ns_steps 3, 600 steps | 600 | 1.589 / 1.524 / 1.485 | 5 Newton-Schulz steps kept |
| G: E, 600 steps | 600 | 1.505 / 1.426 / 1.381 | the target at 550 |
| H: G with AdamW side 6e-3 | 600 | 1.498 / 1.421 / 1.379 | 6e-3 kept (a little better) |
| I: E, 500 steps | 500 | 1.434 | just short |
| J: I with AdamW side 6e-3, decay_fraction 0.4 | 500 | 1.430 | on the target, no margin |
| K: J, 550 steps | 550 | 1.452 / 1.395 | |
| L: K with logit_softcap 30 | 550 | 1.442 / 1.397 | soft-capping off |
| M: K at batch 16 | 450 | 1.464 at 400, 1.397 at 450 | the target at 450 |
| N: K at batch 24 | 300 | 1.552 at 250, 1.453 at 300 | too short |
| O: K at batch 16 | 400 | 1.517 at 350, 1.452 at 400 | too short |

| P: J with warmup 20 (session 8) | 500 | 1.421 | warmup 20: on the target at 500 |
| Q: P with AdamW side 1e-2 | 500 | 1.424 | 6e-3 kept |
| R: P at batch 16 | 400 | 1.452 at 350 ... 1.423 at 400 | **chosen** beside nanoGPT: 400 steps |
| S: P at batch 16 | 500 | 1.410 at 450, 1.356 at 500 | **chosen** beside today (final loss 1.4004): 500 steps |
| T: K at 600 steps (session 7's default) | 600 | 1.476 / 1.414 / 1.374 | the base of U and V |
| U: T, 3 Newton-Schulz steps, one fitted quintic each (a) | 600 | 1.552 / 1.477 / 1.426 | no gain, not kept (a) |
| V: T with compile=true | 600 | 1.469 / 1.411 / 1.365 | off: 100 ms per step after compiling, T 89 ms |

(a) Fitted so that 3 steps map singular values in [0.01, 1] into [0.68, 1.2]. U reached 1.4307 at step 600 in
48.0 s of CPU, T at step 550 in 49.1 s, one after the other on the same core: 3 steps cost 3/5 of the iteration's
matmuls and lost as much in loss per step.

Chosen (`experiment=gpt_pydoc_fast` at this size): Muon lr 0.02 on the hidden matrices, AdamW at 6e-3 on the rest,
wsd with the last 40 % decaying, no architecture switches, warmup 20, batch 16, and a schedule that ends where the
run is timed: 400 steps to nanoGPT's final loss, 500 to today's. Session 7 measured this benchmark at nanoGPT's
batch 12 with 600 steps and warmup 50 (0.39x nanoGPT's time, 0.41x today's) and at batch 16 with 450 steps (0.38x,
0.38x; both files are in git history): a larger batch spreads Muon's optimizer step, which costs the same
whatever the batch, over more tokens, and a shorter warmup leaves more of a short run at the full rate.

The switches cost time as well as loss here: on one thread, beside the test suite (so only as ratios), a
forward+backward took 143 ms with them and 137 ms without, and the optimizer step 6 ms with AdamW, 51 ms with Muon
(bf16, 5 Newton-Schulz steps), 27 ms with 3 steps, 64 ms with 5 in fp32: at batch 12 (768 tokens) Muon's step is
where its extra time per step goes, and it does not grow with the batch.
"""


def data_module():
    """zoo's pydoc characters, split as every run sees them; every val window kept (the fixed set)."""
    from zoo.data.text import PydocDataModule

    dm = PydocDataModule(block_size=SIZE["block_size"], batch_size=BATCH, codec="char", seed=SEED,
                         max_val_windows=None)
    dm.setup("fit")
    return dm


# ---- nanoGPT -------------------------------------------------------------------------------------------------
def nanogpt_args(steps: int) -> list[str]:
    """README's CPU command for shakespeare_char, on pydoc_char, with a final checkpoint at `steps`."""
    return ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--dtype=float32",
            "--dataset=pydoc_char", "--out_dir=out", "--eval_iters=20", "--log_interval=1",
            f"--block_size={SIZE['block_size']}", f"--batch_size={BATCH}", f"--n_layer={SIZE['n_layer']}",
            f"--n_head={SIZE['n_head']}", f"--n_embd={SIZE['n_embd']}", f"--max_iters={steps}",
            f"--lr_decay_iters={steps}", "--dropout=0.0", f"--eval_interval={steps}", "--always_save_checkpoint=True"]


def unpack_nanogpt(source: Path, work: Path) -> Path:
    """An unpacked copy of nanoGPT (from a bare git directory or a folder) with zoo's pydoc ids as its data."""
    dest = work / "nanoGPT"
    if not (dest / "train.py").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        if (source / "train.py").is_file():
            subprocess.run(["cp", "-r", f"{source}/.", str(dest)], check=True)
        else:
            archive = subprocess.run(["git", "-C", str(source), "archive", "HEAD"], check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    dm = data_module()
    data = dest / "data" / "pydoc_char"
    data.mkdir(parents=True, exist_ok=True)
    np.asarray(dm.train_tokens, dtype=np.uint16).tofile(data / "train.bin")
    np.asarray(dm.val_tokens, dtype=np.uint16).tofile(data / "val.bin")
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": dm.codec.vocab_size}, f)
    return dest


def nanogpt_iteration_times(log: str, steps: int) -> dict:
    """Training seconds from nanoGPT's log: its per-iteration times, the iterations that ran an evaluation
    (0 and `steps`: timed from the previous iteration's end, so their time includes it) at the median."""
    times = {int(i): float(ms) / 1000 for i, ms in re.findall(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms", log, re.M)}
    evaluated = {i for i in map(int, re.findall(r"^step (\d+):", log, re.M))}
    updates = [i for i in range(steps) if i in times]  # iterations 0..steps-1 make the checkpoint's updates
    if len(updates) != steps:
        raise RuntimeError(f"nanoGPT's log has {len(updates)} of {steps} iteration times")
    clean = [times[i] for i in updates if i not in evaluated]
    med = statistics.median(clean)
    return {"train_s": sum(clean) + med * (steps - len(clean)), "median_step_s": med,
            "evaluated_iterations": sorted(evaluated)}


def nanogpt_val_loss(repo: Path, checkpoint: Path) -> float:
    """The checkpoint scored with nanoGPT's own model class on the fixed validation windows."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", repo / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)  # nanoGPT pickles its config dict
    model = module.GPT(module.GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    model.eval()
    windows = data_module().eval_dataset("val")
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(windows), 64):
            x = torch.stack([w["idx"] for w in windows[i:i + 64]])
            y = torch.stack([w["targets"] for w in windows[i:i + 64]])
            _, loss = model(x, y)
            total += float(loss) * y.numel()
            n += y.numel()
    return total / n


# ---- zoo -----------------------------------------------------------------------------------------------------
def zoo_overrides(recipe: str, steps: int | None, eval_every: int, run_dir: Path, batch: int = BATCH) -> list[str]:
    """zoo-train's overrides for `recipe` at nanoGPT's size and `batch`; `steps` None: the recipe's own."""
    size = [f"model.{k}={v}" for k, v in SIZE.items()]
    common = [*size, "model.dropout=0.0", f"data.batch_size={batch}", "data.max_val_windows=null",
              *([] if steps is None else [f"trainer.max_steps={steps}"]),
              f"trainer.val_check_interval={eval_every}", "trainer.accelerator=cpu",
              "trainer.enable_progress_bar=false", "samples.every_n_steps=0", "samples.num_samples=1",
              "samples.max_new_tokens=8", "checkpoint.every_n_steps=0", "logger=none", "threads=1",
              "ckpt_path=null", f"run_dir={run_dir}", f"seed={SEED}"]
    if recipe == "today":  # the shipped recipe (AdamW, cosine, GELU) at nanoGPT's rates
        return ["data=pydoc", *common, f"module.lr={LR}", f"module.warmup_steps={WARMUP}",
                f"module.min_lr_ratio={MIN_LR / LR}", f"module.betas=[0.9,{BETA2}]"]
    if recipe == "fast":
        return ["experiment=gpt_pydoc_fast", *common, f"module.warmup_steps={FAST_WARMUP}"]
    raise ValueError(f"unknown recipe {recipe!r}; accepted: 'today', 'fast'")


def zoo_worker(recipe: str, steps: int | None, eval_every: int, out: Path, extra: list[str],
               batch: int = BATCH) -> None:
    """One zoo run in this process (launched by `main` as a subprocess): its val curve to `out` (JSON)."""
    train_with_curve([*zoo_overrides(recipe, steps, eval_every, out.parent / out.stem, batch), *extra], out, recipe)


def train_with_curve(overrides: list[str], out: Path, recipe: str) -> None:
    """zoo-train's run() with `overrides`, timed: its training seconds and validation loss at every evaluation
    to `out` (JSON). Also used by time_to_loss_members.py."""
    import lightning as L
    from hydra import compose, initialize_config_dir

    from zoo.train import run

    class Clock(L.Callback):
        """Training seconds, wall (`train_s`) and this process's CPU (`train_cpu_s`: one thread per run, so what a
        free core would take, whatever else shares the machine), evaluation and what follows it (checkpoint
        saves) excluded; the fixed-set loss at every validation."""

        def __init__(self) -> None:
            self.start = self.paused_at = None
            self.paused, self.curve = {"wall": 0.0, "cpu": 0.0}, []

        @staticmethod
        def now() -> dict[str, float]:
            return {"wall": time.perf_counter(), "cpu": time.process_time()}

        def on_train_start(self, trainer, pl_module) -> None:
            self.start = self.now()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.paused_at is not None:
                now = self.now()
                self.paused = {k: self.paused[k] + now[k] - self.paused_at[k] for k in now}
                self.paused_at = None

        def on_validation_start(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self.paused_at = self.now()

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            t = {k: self.paused_at[k] - self.start[k] - self.paused[k] for k in self.start}
            self.curve.append({"step": trainer.global_step, "train_s": t["wall"], "train_cpu_s": t["cpu"],
                               "val_loss": float(trainer.callback_metrics["val/loss"])})

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    clock = Clock()
    run(cfg, extra_callbacks=[clock], overrides=overrides)
    out.write_text(json.dumps({"recipe": recipe, "overrides": overrides, "curve": clock.curve}))


def first_reach(curve: list[dict], target: float) -> dict | None:
    """The first evaluation at or below `target` (time, step); None if never."""
    keys = ("step", "train_s", "train_cpu_s")
    return next(({k: p[k] for k in keys if k in p} for p in curve if p["val_loss"] <= target), None)


# ---- the command ----------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000, help="nanoGPT's and today's iterations")
    ap.add_argument("--fast-steps", type=int, default=FAST_STEPS,
                    help="the fast run beside nanoGPT: its steps (its schedule's end)")
    ap.add_argument("--fast-steps-today", type=int, default=FAST_STEPS_TODAY,
                    help="the fast run beside today: its steps")
    ap.add_argument("--fast-batch", type=int, default=FAST_BATCH, help="the fast recipe's batch (sequences)")
    ap.add_argument("--eval-every", type=int, default=50, help="zoo runs: steps between fixed-set evaluations")
    ap.add_argument("--nanogpt", type=Path, default=NANOGPT_REPO, help="nanoGPT: a bare git directory or a folder")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one zoo run (today | fast)
    ap.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--override", nargs="*", default=[], help=argparse.SUPPRESS)  # internal: probes' extra overrides
    return ap


def stem(args: argparse.Namespace) -> str:
    where = ["nanogpt", "work", "out_dir", "worker", "worker_out", "override"]  # inputs, outputs, internal
    return output_stem("time_to_loss", changed_options(parser(), args, ignore=where))


def launch(cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def zoo_cmd(args: argparse.Namespace, recipe: str, out: Path, fast_steps: int | None = None) -> list[str]:
    """This script as a subprocess running one zoo run (`--worker`); `fast_steps`: the fast run's (--fast-steps)."""
    steps, batch = (fast_steps or args.fast_steps, args.fast_batch) if recipe == "fast" else (args.steps, BATCH)
    return [sys.executable, str(Path(__file__).resolve()), "--worker", recipe, "--worker-out", str(out),
            "--eval-every", str(args.eval_every), "--steps", str(steps), "--fast-batch", str(batch)]


def pair(procs: dict[str, subprocess.Popen]) -> dict:
    """Wait for a pair of concurrent runs; the 1-minute load average sampled every 10 s while both ran."""
    loads, start = [], time.perf_counter()
    while any(p.poll() is None for p in procs.values()):
        time.sleep(10)
        loads.append(load_average())
    bad = {k: p.returncode for k, p in procs.items() if p.returncode}
    if bad:
        raise RuntimeError(f"runs failed (exit codes {bad}); see their logs in the work folder")
    return {"runs": list(procs), "wall_s": time.perf_counter() - start, "load_avg_1min": loads}


def main(argv: list[str] | None = None) -> dict:
    ap = parser()
    args = ap.parse_args(argv)
    if args.worker:
        zoo_worker(args.worker, args.steps or None, args.eval_every, args.worker_out, args.override, args.fast_batch)
        return {}
    work = args.work or Path(tempfile.mkdtemp(prefix="zoo-time-to-loss-"))
    work.mkdir(parents=True, exist_ok=True)
    repo = unpack_nanogpt(args.nanogpt, work)
    ckpt = repo / "out" / "ckpt.pt"
    ckpt.unlink(missing_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # pair 1: nanoGPT beside fast; pair 2: today beside fast (a second fast run, its schedule --fast-steps-today)
    p1 = pair({"nanogpt": launch([sys.executable, "train.py", *nanogpt_args(args.steps)], repo, work / "nanogpt.log"),
               "fast": launch(zoo_cmd(args, "fast", work / "fast_1.json"), ROOT, work / "fast_1.log")})
    p2 = pair({"today": launch(zoo_cmd(args, "today", work / "today.json"), ROOT, work / "today.log"),
               "fast": launch(zoo_cmd(args, "fast", work / "fast_2.json", args.fast_steps_today), ROOT,
                              work / "fast_2.log")})
    ng_log = (work / "nanogpt.log").read_text()
    ng = {**nanogpt_iteration_times(ng_log, args.steps), "val_loss": nanogpt_val_loss(repo, ckpt),
          "command": "python train.py " + " ".join(nanogpt_args(args.steps)),
          "commit": subprocess.run(["git", "-C", str(args.nanogpt), "rev-parse", "HEAD"], capture_output=True,
                                   text=True).stdout.strip() or None}
    runs = {name: json.loads((work / f"{name}.json").read_text()) for name in ("today", "fast_1", "fast_2")}
    today_final = runs["today"]["curve"][-1]
    ratios = {}
    fast1_ng = first_reach(runs["fast_1"]["curve"], ng["val_loss"])
    fast2_today = first_reach(runs["fast_2"]["curve"], today_final["val_loss"])
    ratios["fast / nanoGPT, to nanoGPT's final loss"] = fast1_ng and fast1_ng["train_s"] / ng["train_s"]
    ratios["fast / today, to today's final loss"] = fast2_today and fast2_today["train_s"] / today_final["train_s"]
    today_ng = first_reach(runs["today"]["curve"], ng["val_loss"])
    step_s = {k: v["curve"][-1]["train_s"] / v["curve"][-1]["step"] for k, v in runs.items()}
    report = {
        "command": " ".join(["python benchmarks/time_to_loss.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": started, "cpu": cpu_name(), "torch": torch.__version__, "threads_per_run": 1,
        "ns_dtype_auto": str(resolve_ns_dtype("auto", torch.device("cpu"))).removeprefix("torch."),
        "fixed_val_set": ("all disjoint 64-character windows of pydoc's validation split "
                          "(zoo data.max_val_windows=null)"),
        "n_val_windows": len(data_module().eval_dataset("val")),
        "nanogpt": ng, "zoo": runs, "pairs": [p1, p2],
        "reached": {"fast (beside nanoGPT) to nanoGPT's final loss": fast1_ng,
                    "fast (beside today) to today's final loss": fast2_today,
                    "today to nanoGPT's final loss": today_ng},
        "today_final": today_final, "step_s": step_s, "ratios": ratios, "batch": BATCH, "fast_batch": args.fast_batch,
        "goals": {"fast / nanoGPT, to nanoGPT's final loss": 0.35, "fast / today, to today's final loss": 0.5},
    }
    out = args.out_dir / stem(args)
    Path(f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    Path(f"{out}.md").write_text(markdown(report))
    print(json.dumps({"ratios": ratios, "nanogpt_val_loss": ng["val_loss"], "today_final": today_final}))
    print(f"wrote {out}.json and {out}.md")
    return report


def fmt_reach(r: dict | None) -> str:
    return "not reached" if r is None else f"{r['train_s']:.1f} s (step {r['step']})"


def markdown(r: dict) -> str:
    ng, runs = r["nanogpt"], r["zoo"]
    loads = [x for p in r["pairs"] for x in p["load_avg_1min"] if x is not None]
    fast_overrides = [o for o in runs["fast_1"]["overrides"] if not o.startswith("run_dir=")]
    lines = [
        "# Time to a validation loss: nanoGPT, zoo's current recipe, zoo's fast recipe (issue 23)", "",
        f"Command: `{r['command']}`. CPU: {r['cpu']} (Muon's Newton-Schulz in {r['ns_dtype_auto']}: "
        f"optim.ns_dtype=auto); torch {r['torch']}; one thread per run, two runs at a time "
        f"(1-minute load average while they ran: {min(loads):.2f}-{max(loads):.2f}); started {r['started']}.", "",
        __doc__.split("\n\n", 2)[2].strip(), "",
        f"Fixed validation set: {r['fixed_val_set']}, {r['n_val_windows']} windows "
        f"({r['n_val_windows'] * SIZE['block_size']:,} predicted characters). nanoGPT {ng['commit'] or ''}: "
        f"`{ng['command']}`.", "",
        f"zoo fast: `zoo-train {' '.join(fast_overrides)}`.", "",
        "## Results", "",
        "| run | batch | steps | final loss (fixed set) | training s | ms / step | to nanoGPT's final loss | "
        "to today's final loss |", "|---|---|---|---|---|---|---|---|",
        f"| nanoGPT train.py | {r['batch']} | {r['today_final']['step']} | {ng['val_loss']:.4f} | "
        f"{ng['train_s']:.1f} | "
        f"{1000 * ng['train_s'] / r['today_final']['step']:.1f} | {ng['train_s']:.1f} s (its end) | - |"]
    for name, label in (("today", "zoo today (beside fast #2)"), ("fast_1", "zoo fast #1 (beside nanoGPT)"),
                        ("fast_2", "zoo fast #2 (beside today)")):
        last = runs[name]["curve"][-1]
        batch = r["fast_batch"] if name.startswith("fast") else r["batch"]
        lines.append(f"| {label} | {batch} | {last['step']} | {last['val_loss']:.4f} | {last['train_s']:.1f} | "
                     f"{1000 * r['step_s'][name]:.1f} | {fmt_reach(first_reach(runs[name]['curve'], ng['val_loss']))}"
                     f" | {fmt_reach(first_reach(runs[name]['curve'], r['today_final']['val_loss']))} |")
    lines += ["", "A run's time to a loss is its training time at the first evaluation (every "
              f"{runs['today']['curve'][0]['step']} steps) at or below it.", "", "## Against the goals", "",
              "| ratio (same pair of runs) | measured | goal | met |", "|---|---|---|---|"]
    for name, goal in r["goals"].items():
        value = r["ratios"][name]
        lines.append(f"| {name} | {'not reached' if value is None else f'{value:.2f}x'} | <= {goal} | "
                     f"{'yes' if value is not None and value <= goal else 'no'} |")
    lines += ["", *why_missed(r), "", "## How the recipe was chosen", "", PROBES.strip(), ""]
    return "\n".join(lines)


def why_missed(r: dict) -> list[str]:
    """For each missed goal: how far, with the per-step time ratio and the steps needed (measured)."""
    out = []
    nanogpt_step_s = r["nanogpt"]["train_s"] / r["today_final"]["step"]  # its mean, as the zoo runs' step_s
    pairs = {"fast / nanoGPT, to nanoGPT's final loss": ("fast_1", nanogpt_step_s, "nanoGPT",
                                                          r["today_final"]["step"], r["nanogpt"]["val_loss"]),
             "fast / today, to today's final loss": ("fast_2", r["step_s"]["today"], "today",
                                                     r["today_final"]["step"], r["today_final"]["val_loss"])}
    for name, goal in r["goals"].items():
        value = r["ratios"][name]
        if value is not None and value <= goal:
            continue
        fast, peer_step_s, peer, peer_steps, target = pairs[name]
        hit = first_reach(r["zoo"][fast]["curve"], target)
        step_ratio = r["step_s"][fast] / peer_step_s
        per_batch = "" if r["fast_batch"] == r["batch"] else (
            f" (batch {r['fast_batch']} against {r['batch']}: "
            f"{hit and hit['step'] * r['fast_batch'] / (peer_steps * r['batch']):.2f}x the sequences)")
        if hit is None:
            steps = r["zoo"][fast]["curve"][-1]["step"]
            out.append(f"- {name}: missed; fast never reached {target:.4f} in its {steps} steps (per-step time "
                       f"{step_ratio:.2f}x {peer}'s).")
            continue
        out.append(f"- {name}: missed by {value / goal:.2f}x ({value:.2f} against {goal}). Per step fast takes "
                   f"{step_ratio:.2f}x {peer}'s time; it needs {hit['step']} steps to {peer}'s {peer_steps} "
                   f"({hit['step'] / peer_steps:.2f}x{per_batch}), and {step_ratio:.2f} x "
                   f"{hit['step'] / peer_steps:.2f} = "
                   f"{step_ratio * hit['step'] / peer_steps:.2f}. At its per-step time the goal needs <= "
                   f"{int(goal * peer_steps / step_ratio)} steps.")
    return out


if __name__ == "__main__":
    main()
