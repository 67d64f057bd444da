"""zoo-train: train any zoo model from a Hydra config (conf/train.yaml), then print samples.

    zoo-train                                   # default GPT on embedded text
    zoo-train model.n_layer=2 data=text_files data.path=corpus/ trainer.max_steps=200
    zoo-train --cfg job                         # print the resolved config
    zoo-train -m model.n_layer=2,4              # multirun sweep
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
import lightning as L
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, read_write

from zoo.cli import CONF_DIR, quiet_console, resolve, run_checked
from zoo.data.download import MissingExtra
from zoo.training import checkpoint_io, resilience
from zoo.training.builders import build_data, build_module, build_strategy, check_writable, resolve_ckpt_path
from zoo.training.callbacks import SampleCallback, monitoring_callbacks, parameter_counts
from zoo.training.checkpoint_io import CheckpointError, CheckpointSaveError, InsufficientDiskSpace
from zoo.training.module import NonFiniteLossError
from zoo.training.progress import ProgressBar
from zoo.training.resilience import Interrupted, signal_name
from zoo.training.tracking import build_logger

log = logging.getLogger("zoo.train")


def run(cfg: DictConfig, extra_callbacks: list | None = None) -> dict:
    """Train with a composed config; return a summary dict (paths, metrics, samples).

    Raises `zoo.training.resilience.Interrupted` after SIGTERM / SIGINT / SIGUSR1, once `last.ckpt` is saved."""
    resolved = resolve(cfg, "zoo-train")
    run_dir = Path(cfg.get("run_dir") or hydra_run_dir())
    ckpt_dir = run_dir / "checkpoints"
    check_writable(run_dir)  # fail before any work, not after an hour
    check_writable(ckpt_dir)
    checkpoint_io.clean_stale_temp_files(ckpt_dir)  # debris of a save killed midway (last.ckpt itself is intact)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    dm = build_data(resolved["data"])
    dm.prepare_data()
    dm.setup("fit")
    module = build_module(resolved["model"], resolved["module"], codec=dm.codec, train_config=resolved)
    checkpoint_io.check_free_space(ckpt_dir, 2 * checkpoint_io.checkpoint_size_estimate(module))
    total, trainable = parameter_counts(module)
    trained = f"{trainable:,} trainable" if trainable != total else "all trainable"
    log.info("zoo-train: %s (%s parameters, %s) on %s for %s steps -> %s", module.model.model_type,
             f"{total:,}", trained, resolved["data"].get("name", "data"), cfg.trainer.max_steps, run_dir)
    if cfg.compile:
        module.model.compile()  # in place: state-dict keys stay free of `_orig_mod.`

    sample_cb = SampleCallback(run_dir / "samples", **OmegaConf.to_container(cfg.samples))
    checkpoint_cb = ModelCheckpoint(
        dirpath=ckpt_dir, filename="step{step:06d}", auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint.every_n_steps, save_top_k=1, monitor="val/loss",
        mode="min", save_on_train_epoch_end=False,
        save_last=True,  # a full (atomic) save, not "link": a symlink swap is not atomic
        enable_version_counter=False)  # always last.ckpt, even when the interruption save wrote it
    guard = resilience.InterruptGuard(ckpt_dir / "last.ckpt")
    callbacks = [checkpoint_cb, resilience.RNGState(), guard, sample_cb,
                 *monitoring_callbacks(OmegaConf.to_container(cfg.logger)),
                 *resilience.env_test_callbacks(), *(extra_callbacks or [])]
    logger = build_logger(OmegaConf.to_container(cfg.logger), run_dir=run_dir, name=cfg.name, config=resolved)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer)
    if trainer_kwargs.get("enable_progress_bar", True) and os.environ.get("ZOO_PLAIN_PROGRESS") is None:
        callbacks.append(ProgressBar())
    strategy = build_strategy(resolved["strategy"], devices=trainer_kwargs["devices"],
                              num_nodes=trainer_kwargs["num_nodes"])
    trainer = L.Trainer(**trainer_kwargs, strategy=strategy, logger=logger or False, callbacks=callbacks,
                        default_root_dir=str(run_dir),
                        plugins=[checkpoint_io.AtomicCheckpointIO(), *resilience.slurm_plugins()])
    ckpt_path = resolve_ckpt_path(cfg.ckpt_path, ckpt_dir)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    summary = {"run_dir": str(run_dir), "checkpoint": str(ckpt_dir / "last.ckpt"), "command": _command(run_dir)}
    try:
        with guard.handlers():
            # weights_only: resuming never unpickles code, whatever Lightning's default (issue 13)
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except CheckpointError as e:
        if ckpt_path is None:
            raise
        raise CheckpointError(f"cannot resume: {e}. {_resume_advice(Path(ckpt_path))}") from None
    except SIGTERMException:
        summary.update(_results(trainer, checkpoint_cb))
        if trainer.is_global_zero:
            print_interrupted(summary, guard)
        raise resilience.Interrupted(guard.signum or signal.SIGTERM, guard.step, guard.saved) from None

    summary.update(_results(trainer, checkpoint_cb), samples=sample_cb.last, samples_dir=str(sample_cb.out_dir),
                   baseline=getattr(dm, "unigram_nll", lambda: None)())
    if trainer.is_global_zero:
        print_summary(summary)
    return summary


def _resume_advice(bad: Path) -> str:
    """What to do about a checkpoint that cannot be resumed from: an older one of the same run, or a fresh start."""
    others = sorted((p for p in bad.parent.glob("step*.ckpt") if p != bad), key=lambda p: p.stat().st_mtime)
    older = f"resume from an earlier one with ckpt_path={others[-1]}, or " if others else ""
    return f"Move the file aside and {older}start fresh with ckpt_path=null"


def _results(trainer, checkpoint_cb) -> dict:
    best = checkpoint_cb.best_model_score
    return {"metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
            "step": trainer.global_step, "best_val_loss": float(best) if best is not None else None,
            "best_checkpoint": checkpoint_cb.best_model_path or None}


def _command(run_dir: Path) -> str:
    """The command line that resumes this run: its overrides, with its run folder made explicit
    (so a multirun job resumes in place) and any ckpt_path dropped (the default, last, resumes)."""
    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # not launched through Hydra (e.g. `run(cfg)` from Python)
        return f"zoo-train ...  (this run's overrides) run_dir={shlex.quote(str(run_dir))}"
    keep = [o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "run_dir="))]
    return " ".join(["zoo-train", *map(shlex.quote, keep), shlex.quote(f"run_dir={run_dir}")])


def _losses(s: dict) -> str | None:
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


def print_summary(s: dict) -> None:
    """The end-of-training screen (at most ~20 lines): losses, a sample, where everything was written,
    and the `zoo-sample` command to try next."""
    rule = "=" * 78
    lines = [rule, f"finished at step {s.get('step', '?')}"]
    if (losses := _losses(s)) is not None:
        lines.append(losses)
    samples = s.get("samples")
    if samples is not None and samples.texts:
        prompt, text = samples.texts[0]
        shown = (prompt + text).splitlines()[:4]
        lines += ["--- sample ---", *(ln[:78] for ln in shown)]
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
        lines += [f"      zoo-sample checkpoint={single} num_samples=4", rule]
    else:
        lines += [f"next: zoo-sample checkpoint={s['checkpoint']} num_samples=4", rule]
    print("\n".join(lines))


def print_interrupted(s: dict, guard) -> None:
    """The short screen after SIGTERM / Ctrl-C / SIGUSR1: what was saved and how to resume."""
    rule = "=" * 78
    lines = [rule, f"interrupted by {signal_name(guard.signum or signal.SIGTERM)} at step {guard.step}"]
    if (losses := _losses(s)) is not None:
        lines.append(losses)
    if guard.saved:
        lines += [f"checkpoint:   {guard.saved}", f"resume:       {s['command']}",
                  "              (ckpt_path=last, the default, continues from this checkpoint)"]
    else:
        lines.append(f"nothing new saved; the previous checkpoint (if any) in {Path(s['checkpoint']).parent} "
                     "is kept")
    lines.append(rule)
    print("\n".join(lines), flush=True)


def hydra_run_dir() -> str:
    return HydraConfig.get().runtime.output_dir


_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextmanager
def multirun_job() -> Iterator[None]:
    """Run one job of a Hydra multirun so that DDP works in it (docs/scaling.md, "Hydra multirun with DDP").

    Lightning starts ranks 1.. as `python -m zoo.train <sys.argv[1:]> hydra.run.dir=<HydraConfig run.dir>`.
    In a multirun, sys.argv holds the whole sweep (`-m model.n_layer=1,2`) and run.dir is the single-run
    folder, so every child would start the sweep again, in runs/<name>: point both at this job. After
    the job, its process group goes (its other ranks have exited), so that the next job starts its own.
    """
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        yield
        return
    argv, sys.argv = sys.argv, [sys.argv[0], *hc.overrides.task]
    env = {k: os.environ.get(k) for k in _LAUNCH_ENV}
    with read_write(hc.run):
        hc.run.dir = hc.runtime.output_dir
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        # Lightning leaves LOCAL_RANK etc. set; the next job would take them for an external launcher
        # (torchrun) and wait for ranks nobody starts
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sys.argv = argv


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _main(cfg: DictConfig) -> float | None:
    quiet_console()
    try:
        with multirun_job():
            summary = run(cfg)
    except Interrupted as e:
        log.warning("%s", e)
        raise SystemExit(e.exit_code) from None  # 128 + signal: schedulers see the run was stopped
    except (PermissionError, InsufficientDiskSpace, CheckpointSaveError, NonFiniteLossError, CheckpointError,
            MissingExtra) as e:
        raise SystemExit(f"zoo-train: {e}") from None  # the message says what to do; no traceback
    return summary["metrics"].get("val/loss")  # the value a sweeper would optimise


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_checked("train", _main)
    except KeyboardInterrupt:  # Ctrl-C before training started (or pressed twice): nothing new to save
        print("zoo-train: interrupted; checkpoints already written are kept", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None


if __name__ == "__main__":
    main()
