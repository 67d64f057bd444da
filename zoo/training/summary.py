"""What zoo-train tells the user, as text (the entry point prints it): the opening line, the end-of-run
screen (at most ~20 lines: losses, a sample, where everything was written, what to run next) and the
short screen after an interruption (what was saved, how to resume)."""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from zoo.training.callbacks import parameter_counts
from zoo.training.module import GenerativeModule
from zoo.training.resilience import InterruptGuard, signal_name

RULE = "=" * 78


def opening_line(module: GenerativeModule, data_name: str, max_steps: int, run_dir: Path) -> str:
    total, trainable = parameter_counts(module)
    trained = f"{trainable:,} trainable" if trainable != total else "all trainable"
    return (f"zoo-train: {module.model.model_type} ({total:,} parameters, {trained}) on {data_name} "
            f"for {max_steps} steps -> {run_dir}")


def results(trainer: L.Trainer, checkpoint_cb: ModelCheckpoint) -> dict[str, Any]:
    """The run's final metrics, step and best validation loss / checkpoint, for the summary dict."""
    best = checkpoint_cb.best_model_score
    return {"metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
            "step": trainer.global_step, "best_val_loss": float(best) if best is not None else None,
            "best_checkpoint": checkpoint_cb.best_model_path or None}


def resume_advice(bad: Path) -> str:
    """What to do about a checkpoint that cannot be resumed from: an older one of the same run, or a fresh start."""
    others = sorted((p for p in bad.parent.glob("step*.ckpt") if p != bad), key=lambda p: p.stat().st_mtime)
    older = f"resume from an earlier one with ckpt_path={others[-1]}, or " if others else ""
    return f"Move the file aside and {older}start fresh with ckpt_path=null"


def losses(s: dict[str, Any]) -> str | None:
    """'validation loss 1.2345 nats/token (1.7810 bits, perplexity 3.44); best ...', or the train loss."""
    m = s["metrics"]
    if "val/loss" not in m:
        return f"train loss {m['train/loss']:.4f} nats/token" if "train/loss" in m else None
    line = f"validation loss {m['val/loss']:.4f} nats/token ({m['val/loss'] / math.log(2):.4f} bits"
    line += f", perplexity {m['val/ppl']:.2f})" if "val/ppl" in m else ")"
    if s.get("best_val_loss") is not None:
        line += f"; best {s['best_val_loss']:.4f}"
    if s.get("baseline") is not None:
        line += f"; unigram baseline {s['baseline']:.4f}"
    return line


def summary_screen(s: dict[str, Any]) -> str:
    """The end-of-training screen from `zoo.train.run`'s summary dict."""
    lines = [RULE, f"finished at step {s.get('step', '?')}"]
    if (loss_line := losses(s)) is not None:
        lines.append(loss_line)
    samples = s.get("samples")
    if samples is not None and samples.texts:
        prompt, text = samples.texts[0]
        lines += ["--- sample ---", *(ln[:78] for ln in (prompt + text).splitlines()[:4])]
    if samples is not None and (samples.images or samples.audio):
        lines.append(f"sample files: {', '.join(str(p) for p in [*samples.images, *samples.audio][:3])}")
    lines.append(f"run folder:   {s['run_dir']}")
    lines.append(f"checkpoint:   {s['checkpoint']}")
    if s.get("best_checkpoint") and s["best_checkpoint"] != s["checkpoint"]:
        lines.append(f"best:         {s['best_checkpoint']}")
    if s.get("samples_dir") and Path(s["samples_dir"]).is_dir():
        lines.append(f"samples:      {s['samples_dir']}")
    if Path(s["checkpoint"]).is_dir():  # sharded (strategy.save_distributed_checkpoint=true): one file first
        single = Path(s["checkpoint"]).with_name("last-full.ckpt")
        lines.append(f"next: zoo-export checkpoint={s['checkpoint']} out={single}")
        lines += [f"      zoo-sample checkpoint={single} num_samples=4", RULE]
    else:
        lines += [f"next: zoo-sample checkpoint={s['checkpoint']} num_samples=4", RULE]
    return "\n".join(lines)


def interrupted_screen(s: dict[str, Any], guard: InterruptGuard) -> str:
    """The short screen after SIGTERM / Ctrl-C / SIGUSR1; `s["command"]` is the command that resumes."""
    lines = [RULE, f"interrupted by {signal_name(guard.signum or signal.SIGTERM)} at step {guard.step}"]
    if (loss_line := losses(s)) is not None:
        lines.append(loss_line)
    if guard.saved:
        lines += [f"checkpoint:   {guard.saved}", f"resume:       {s['command']}",
                  "              (ckpt_path=last, the default, continues from this checkpoint)"]
    else:
        lines.append(f"nothing new saved; the previous checkpoint (if any) in {Path(s['checkpoint']).parent} "
                     "is kept")
    lines.append(RULE)
    return "\n".join(lines)
