"""One training run from a resolved config: the library part of `zoo-train` (zoo/train.py composes the config
with Hydra, loads an `init_from` source through the hub, prints the screens, and calls `train`).

`train(c, run_dir=...)` takes the config as plain containers (`OmegaConf.to_container(cfg, resolve=True)`), checks
it before any work (`zoo.training.preflight`), builds the data, the module and the Trainer, fits (resuming from
`ckpt_path`), and returns the summary: paths, metrics, samples. Benchmarks and tests call it (or zoo.train.run,
which composes first); it imports neither Hydra nor the hub.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zoo.training import builders, checkpoint_io, init_from, lora, peers, resilience
from zoo.training.builders import build_data, build_module
from zoo.training.callbacks import SampleCallback, monitoring_callbacks
from zoo.training.checkpoint_io import CheckpointError
from zoo.training.preflight import check_train_config
from zoo.training.progress import ProgressBar
from zoo.training.summary import opening_line, results, resume_advice
from zoo.training.tracking import build_logger

log = logging.getLogger("zoo.train")

Summary = dict[str, Any]


def train(c: dict[str, Any], *, run_dir: str | Path, resume_command: str, source: Any = None,
          keys: Collection[str] = (), extra_callbacks: list[L.Callback] | None = None,
          on_summary: Callable[[Summary], None] | None = None,
          on_interrupted: Callable[[Summary, resilience.InterruptGuard], None] | None = None) -> Summary:
    """Train with the resolved config `c` in `run_dir`; return the summary (paths, metrics, samples).

    `source`: the loaded `init_from` model (`zoo.load`'s result: `.model`, `.codec`), its `model` section already
    in `c` (`init_from.model_section`); `keys`: the command line's keys (`init_from` refusals name them).
    `on_summary` / `on_interrupted` run on the global-zero process only (the entry point prints its screens).
    Raises `zoo.config.ConfigError` for a config that cannot work, before any work, and
    `resilience.Interrupted` after SIGTERM / SIGINT / SIGUSR1, once `last.ckpt` is saved."""
    check_train_config(c)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    builders.check_writable(run_dir)  # fail before any work, not after an hour
    builders.check_writable(ckpt_dir)
    checkpoint_io.clean_stale_temp_files(ckpt_dir)  # debris of a save killed midway (last.ckpt itself is intact)
    if c["threads"]:
        torch.set_num_threads(c["threads"])
    L.seed_everything(c["seed"], workers=True, verbose=False)

    data_name = c["data"].get("name", "data")
    dm = build_data(init_from.data_section(c["init_from"], source.codec, c["data"], keys) if source else c["data"])
    try:
        dm.prepare_data()
        dm.setup("fit")
    except ValueError as e:  # e.g. characters the source's char codec has no token for
        if source is None:
            raise
        raise init_from.codec_refusal(c["init_from"], source.codec, data_name, e) from None
    if source is not None:
        init_from.check_codec(c["init_from"], source.codec, data_name, dm.codec)
    module = build_module(c["model"], c["module"], codec=dm.codec, train_config=c, optim_cfg=c.get("optim"))
    ckpt_path = builders.resolve_ckpt_path(c["ckpt_path"], ckpt_dir)
    if source is not None and ckpt_path:
        log.info("init_from=%s: not applied, this run resumes from its own %s", c["init_from"], ckpt_path)
    elif source is not None:
        init_from.copy_weights(module.model, source.model, c["init_from"])
        log.info("init_from=%s: weights loaded (fresh optimizer, step 0)", c["init_from"])
    if (c.get("lora") or {}).get("rank"):
        lora.apply_lora(module.model, c["lora"])
        log.info("%s", lora.parameter_summary(module.model))
    checkpoint_io.check_free_space(ckpt_dir, 2 * checkpoint_io.checkpoint_size_estimate(module))
    log.info("%s", opening_line(module, data_name, c["trainer"]["max_steps"], run_dir))
    if c["compile"]:
        module.model.compile()  # in place: state-dict keys stay free of `_orig_mod.`

    sample_cb = SampleCallback(run_dir / "samples", **c["samples"])
    checkpoint_cb = builders.build_checkpoint_callback(ckpt_dir, c["checkpoint"]["every_n_steps"])
    guard = resilience.InterruptGuard(ckpt_dir / "last.ckpt")
    watch = peers.PeerWatch(ckpt_dir / "last.ckpt")  # a DDP/FSDP peer that dies or hangs (zoo/training/peers.py)
    callbacks = [checkpoint_cb, resilience.RNGState(), guard, watch, sample_cb, *monitoring_callbacks(c["logger"]),
                 *resilience.env_test_callbacks(), *(extra_callbacks or [])]
    if c["trainer"].get("enable_progress_bar", True) and os.environ.get("ZOO_PLAIN_PROGRESS") is None:
        callbacks.append(ProgressBar())
    logger = build_logger(c["logger"], run_dir=run_dir, name=c["name"], config=c)
    trainer = builders.build_trainer(c["trainer"], c["strategy"], run_dir=run_dir, callbacks=callbacks, logger=logger,
                                     on_save_error=c["checkpoint"].get("on_error", "stop"))
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    summary = {"run_dir": str(run_dir), "checkpoint": str(ckpt_dir / "last.ckpt"), "command": resume_command}
    try:
        with guard.handlers():
            # weights_only: resuming never unpickles code, whatever Lightning's default (issue 13)
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except CheckpointError as e:
        if ckpt_path is None:
            raise
        raise CheckpointError(f"cannot resume: {e}. {resume_advice(Path(ckpt_path))}") from None
    except SIGTERMException:
        summary.update(results(trainer, checkpoint_cb))
        if trainer.is_global_zero and on_interrupted is not None:
            on_interrupted(summary, guard)
        raise resilience.Interrupted(guard.signum or signal.SIGTERM, guard.step, guard.saved) from None
    except Exception:
        if watch.failure is None:
            raise
        peers.stop_launched_ranks(trainer)  # a hung rank this process started must not outlive the run
        last = ckpt_dir / "last.ckpt"
        raise peers.PeerFailure(rank=trainer.global_rank, world_size=trainer.world_size, step=watch.step,
                                cause=peers.short_cause(watch.failure), saved=watch.saved,
                                last_checkpoint=str(last) if last.exists() else None, resume_command=resume_command,
                                sharded=c["strategy"].get("name") == "fsdp") from None

    summary.update(results(trainer, checkpoint_cb), samples=sample_cb.last, samples_dir=str(sample_cb.out_dir),
                   baseline=getattr(dm, "unigram_nll", lambda: None)())
    if trainer.is_global_zero and on_summary is not None:
        on_summary(summary)
    return summary
